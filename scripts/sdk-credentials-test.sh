#!/usr/bin/env bash
# Proves that unmodified AWS SDKs, configured by environment or profile only, get
# prefix-scoped credentials from storage-grants and fetch new ones by themselves,
# against moto's STS and S3 on 127.0.0.1 only:
#
# 1. boto3 with AWS_CONTAINER_CREDENTIALS_FULL_URI (the service's HTTP gateway) and
#    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: put, get, list inside the prefix; with its
#    clock moved into botocore's advisory, then mandatory refresh window, it fetches
#    again by itself (fetches counted at the service) and no call fails
#    (tests/sdk/boto3_container.py);
# 2. the same with the AWS SDK for JavaScript v3 (@aws-sdk/client-s3, pinned in
#    tests/sdk/node with its lock file), Date.now() moved into its 5-minute window
#    (tests/sdk/node/container.mjs);
# 3. the AWS CLI (awscli, pinned in scripts/requirements.txt) with a credential_process
#    profile calling `SERVER_BINARY credential-process` lists the prefix;
# 4. boto3 again through `SERVER_BINARY credentials-proxy`, the loopback sidecar that
#    holds the pod's token and asks the service over gRPC; boto3 sends the app's token
#    the proxy wrote (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE), and a request without it
#    or addressed by a host name is refused;
# 5. refusals over plain HTTP: no token 401, another tenant's prefix 403, a prefix
#    outside the rules 403, a prefix without its trailing slash 400, STS down 503 with
#    Retry-After; and no token value in the service's or the proxy's log.
#
# Usage: scripts/sdk-credentials-test.sh [SERVER_BINARY]
#   SERVER_BINARY  an already-built server (default: target/debug/storage-grants);
#                  this script does not build it.
# Exit code: 0 when every step passed, 1 when a check failed, 2 when it could not be set up.
set -euo pipefail

# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { echo "sdk-credentials-test: $*" >&2; }

root=$(repo_root)
server_bin=$(server_binary "${1:-}") || exit 2
for tool in curl node npm; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 2; }
done

work="" moto_pid="" server_pid="" proxy_pid=""
cleanup() {
  local rc=$?
  stop_process "$proxy_pid"
  stop_process "$server_pid"
  stop_process "$moto_pid"
  [[ -z $work ]] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools and packages ------------------------------------------------------------------

python=$(ensure_python_venv)
venv_bin=$(dirname "$python")
node_dir="$root/tests/sdk/node"
if [[ ! -e $node_dir/node_modules/.package-lock.json || $node_dir/package-lock.json -nt $node_dir/node_modules/.package-lock.json ]]; then
  log "installing tests/sdk/node's packages (npm ci)"
  (cd "$node_dir" && npm ci --no-audit --no-fund) >&2 || { log "npm ci in $node_dir failed"; exit 2; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/storage-grants-sdk.XXXXXX")
declare -a passed=() failed=()
verdict() { # NAME RC
  if (($2 == 0)); then
    passed+=("$1")
    log "PASSED: $1"
  else
    failed+=("$1")
    log "FAILED: $1"
  fi
}

# --- moto and the service ----------------------------------------------------------------

bucket=demo
caller_a=dev:tenant-a
caller_b=dev:tenant-b
prefix_a=tenants/a/
prefix_b=tenants/b/
# Random per-run tokens and keys: nothing real, nothing another run could reuse. The
# token files hold the bare token without a newline, as a projected token file does.
token_a="dev-a-$(random_hex 16)"
token_b="dev-b-$(random_hex 16)"
printf '%s' "$token_a" >"$work/token-a"
printf '%s' "$token_b" >"$work/token-b"
chmod 600 "$work/token-a" "$work/token-b"
service_key="SGSDK$(random_hex 6)"
service_secret=$(random_hex 20)

: >"$work/aws-config"
: >"$work/aws-credentials"
# Every AWS_* variable of the caller's environment is dropped, so a developer's own AWS
# setup cannot leak in: each SDK sees only what a step gives it.
aws_isolated=(env)
while IFS= read -r name; do aws_isolated+=(-u "$name"); done < <(compgen -e | grep '^AWS_' || true)
aws_isolated+=(
  AWS_CONFIG_FILE="$work/aws-config"
  AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
  AWS_EC2_METADATA_DISABLED=true
  AWS_REGION=us-east-1
)

moto_port=$(free_port)
moto_pid=$(start_moto "$moto_port" "$work/moto.log")
moto_url="http://127.0.0.1:$moto_port"
log "moto (STS and S3) on 127.0.0.1:$moto_port (pid $moto_pid)"
if ! "${aws_isolated[@]}" AWS_ACCESS_KEY_ID=moto-setup AWS_SECRET_ACCESS_KEY=moto-setup \
  "$python" -c 'import sys, boto3; boto3.client("s3", endpoint_url=sys.argv[1]).create_bucket(Bucket=sys.argv[2])' \
  "$moto_url" "$bucket" >"$work/moto-setup.log" 2>&1; then
  log "could not create bucket $bucket in moto"
  log_tail "$work/moto-setup.log"
  exit 2
fi

grpc_port=$(free_port)
http_port=$(free_port)
mkdir -p "$work/server"
cat >"$work/server/config.toml" <<EOF
listen = "127.0.0.1:$grpc_port"

[storage]
region = "us-east-1"
endpoint = "$moto_url"
force_path_style = true

[grants]
default_ttl = "1h"
max_ttl = "1h"
rules_file = "rules.toml"

[http]
listen = "127.0.0.1:$http_port"

[identity]
dev_mode = true

[[identity.dev_tokens]]
token = "$token_a"
caller = "$caller_a"

[[identity.dev_tokens]]
token = "$token_b"
caller = "$caller_b"

[sts]
role_arn = "arn:aws:iam::123456789012:role/storage-grants-sdk-test"
endpoint = "$moto_url"
storage_endpoint = "$moto_url"
role_chaining = false
# One hour, so that the SDKs hold credentials outside their refresh windows at first.
default_duration = "1h"
# STS down answers quickly (step 5).
call_timeout = "3s"
max_attempts = 2
EOF
cat >"$work/server/rules.toml" <<EOF
[[rules]]
callers = ["$caller_a"]
bucket = "$bucket"
prefix = "$prefix_a"
actions = ["assume-read", "assume-write", "list"]
max_ttl = "1h"

[[rules]]
callers = ["$caller_b"]
bucket = "$bucket"
prefix = "$prefix_b"
actions = ["assume-read", "assume-write", "list"]
max_ttl = "1h"
EOF

server_env=(env)
while IFS= read -r name; do server_env+=(-u "$name"); done < <(compgen -e | grep -E '^(STORAGE_GRANTS_|AWS_)' || true)
server_env+=(
  AWS_ACCESS_KEY_ID="$service_key"
  AWS_SECRET_ACCESS_KEY="$service_secret"
  AWS_REGION=us-east-1
  AWS_CONFIG_FILE="$work/aws-config"
  AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
  AWS_EC2_METADATA_DISABLED=true
  # debug, not info: the secret checks of step 5 then cover the detailed logs too.
  RUST_LOG=debug
)
config="$work/server/config.toml"
if ! "${server_env[@]}" "$server_bin" --config "$config" --check-config >"$work/check-config.log" 2>&1; then
  log "the server rejected the test config (--check-config):"
  log_tail "$work/check-config.log"
  exit 2
fi
# stdout and stderr both: the token-leak check reads everything the service wrote.
"${server_env[@]}" "$server_bin" --config "$config" serve </dev/null >"$work/server.log" 2>&1 &
server_pid=$!
if ! wait_for_port 127.0.0.1 "$grpc_port" 20 "$server_pid" || ! wait_for_port 127.0.0.1 "$http_port" 10 "$server_pid"; then
  log "storage-grants did not come up"
  log_tail "$work/server.log"
  exit 2
fi
log "storage-grants on 127.0.0.1:$grpc_port (gRPC) and 127.0.0.1:$http_port (HTTP) (pid $server_pid)"

endpoint_a="http://127.0.0.1:$http_port/v1/credentials/$bucket/$prefix_a?access=read-write&list=true"
sdk_env=(
  "${aws_isolated[@]}"
  AWS_ENDPOINT_URL="$moto_url"
  SDK_BUCKET="$bucket"
  SDK_PREFIX="$prefix_a"
  SDK_AUDIT_LOG="$work/server.log"
  SDK_CALLER="$caller_a"
  SDK_SECRETS_OUT="$work/issued-secrets"
  PYTHONDONTWRITEBYTECODE=1
)

# count_fetches: the answers with credentials the service gave caller A under its prefix.
count_fetches() {
  "$python" "$root/tests/sdk/fetches.py" "$work/server.log" "$caller_a" "$prefix_a" | cut -d' ' -f1
}

# --- 1. boto3 on the endpoint --------------------------------------------------------------

log "step 1: boto3, AWS_CONTAINER_CREDENTIALS_FULL_URI=$endpoint_a + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
rc=0
"${sdk_env[@]}" AWS_CONTAINER_CREDENTIALS_FULL_URI="$endpoint_a" AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$work/token-a" \
  SDK_KEY_TAG=boto3 "$python" "$root/tests/sdk/boto3_container.py" || rc=$?
verdict "1. boto3: container endpoint, put/get/list, refresh by itself" "$rc"

# --- 2. the JavaScript SDK on the endpoint ---------------------------------------------------

log "step 2: @aws-sdk/client-s3 (Node $(node --version)), the same environment"
rc=0
"${sdk_env[@]}" AWS_CONTAINER_CREDENTIALS_FULL_URI="$endpoint_a" AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$work/token-a" \
  node "$node_dir/container.mjs" || rc=$?
verdict "2. @aws-sdk/client-s3: container endpoint, put/get/list, refresh by itself" "$rc"

# --- 3. the AWS CLI with credential_process ---------------------------------------------------

log "step 3: aws (awscli $("$venv_bin/aws" --version 2>&1 | cut -d' ' -f1 | cut -d/ -f2)) with a credential_process profile"
cat >"$work/cli-config" <<EOF
[profile tenant-a]
region = us-east-1
credential_process = $server_bin credential-process --endpoint http://127.0.0.1:$grpc_port --bucket $bucket --prefix $prefix_a --access read-write --list --token-file $work/token-a
EOF
rc=0
fetches_before_cli=$(count_fetches)
cli_env=("${aws_isolated[@]}" AWS_CONFIG_FILE="$work/cli-config" AWS_PROFILE=tenant-a)
if ! "${cli_env[@]}" "$venv_bin/aws" --endpoint-url "$moto_url" s3 cp - "s3://$bucket/${prefix_a}cli/hello.txt" \
  <<<"written by the AWS CLI" >"$work/cli-cp.log" 2>&1; then
  log "aws s3 cp into the prefix failed:"
  redact_secrets <"$work/cli-cp.log" >&2
  rc=1
fi
if ! "${cli_env[@]}" "$venv_bin/aws" --endpoint-url "$moto_url" s3api list-objects-v2 \
  --bucket "$bucket" --prefix "$prefix_a" --query 'Contents[].Key' --output text >"$work/cli-ls.log" 2>&1; then
  log "aws s3api list-objects-v2 failed:"
  redact_secrets <"$work/cli-ls.log" >&2
  rc=1
else
  for want in "${prefix_a}cli/hello.txt" "${prefix_a}boto3/hello.txt" "${prefix_a}node/hello.txt"; do
    if tr '\t' '\n' <"$work/cli-ls.log" | grep -qxF "$want"; then
      log "ok   aws lists $want"
    else
      log "FAIL aws did not list $want (got: $(tr '\n\t' '  ' <"$work/cli-ls.log"))"
      rc=1
    fi
  done
fi
# The CLI's credentials really came through credential_process: each `aws` run above
# started it once, and each of those asked the service (counted in its audit log).
cli_fetches=$(($(count_fetches) - fetches_before_cli))
if ((cli_fetches >= 2)); then
  log "ok   the service answered $cli_fetches AssumeScoped calls from credential-process (one per aws run)"
else
  log "FAIL the service saw $cli_fetches AssumeScoped calls from credential-process, expected 2"
  rc=1
fi
verdict "3. AWS CLI: credential_process profile lists the prefix" "$rc"

# --- 4. boto3 through the credentials proxy (sidecar) -----------------------------------------

proxy_port=$(free_port)
"${aws_isolated[@]}" RUST_LOG=debug "$server_bin" credentials-proxy --endpoint "http://127.0.0.1:$grpc_port" \
  --listen "127.0.0.1:$proxy_port" --token-file "$work/token-a" \
  --authorization-token-file "$work/app-token" </dev/null >"$work/proxy.log" 2>&1 &
proxy_pid=$!
rc=0
if ! wait_for_port 127.0.0.1 "$proxy_port" 10 "$proxy_pid"; then
  log "credentials-proxy did not come up on 127.0.0.1:$proxy_port"
  log_tail "$work/proxy.log"
  rc=1
else
  proxy_uri="http://127.0.0.1:$proxy_port/v1/credentials/$bucket/$prefix_a?access=read-write&list=true"
  log "step 4: boto3, AWS_CONTAINER_CREDENTIALS_FULL_URI=$proxy_uri and the app's token the proxy wrote (the caller's token stays in the sidecar)"
  "${sdk_env[@]}" AWS_CONTAINER_CREDENTIALS_FULL_URI="$proxy_uri" \
    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$work/app-token" \
    SDK_KEY_TAG=proxy "$python" "$root/tests/sdk/boto3_container.py" || rc=$?
  # What a forged request in the app or a rebinding web page sends: refused.
  for forged in "-H Authorization:" "-H Host:rebound.example -H Authorization:$(cat "$work/app-token")"; do
    # shellcheck disable=SC2086 # the words are curl's arguments
    got=$(curl -s -o /dev/null -w '%{http_code}' $forged "$proxy_uri") || got=000
    if [[ $got == 401 || $got == 403 ]]; then
      log "ok   the proxy refused a request with ${forged%%:*}…: $got"
    else
      log "FAIL the proxy answered $got to a request with ${forged%%:*}…"
      rc=1
    fi
  done
fi
verdict "4. boto3 through credentials-proxy (sidecar)" "$rc"

# --- 5. refusals over plain HTTP ----------------------------------------------------------------

# expect NAME STATUS CODE PATH_AND_QUERY [curl args...]: one GET to the HTTP gateway must
# answer STATUS with JSON whose `code` is CODE.
refusals_rc=0
expect() {
  local what=$1 status=$2 code=$3 path=$4 got body
  shift 4
  got=$(curl -sS -o "$work/answer.json" -D "$work/answer.headers" -w '%{http_code}' "$@" \
    "http://127.0.0.1:$http_port/v1/credentials/$bucket/$path") || got=000
  body=$("$python" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d.get("code"), "-", d.get("message"))' \
    "$work/answer.json" 2>/dev/null || echo "(no JSON body)")
  if [[ $got == "$status" && $body == "$code "* ]]; then
    log "ok   $what: $got $body"
  else
    log "FAIL $what: expected $status $code, got $got $body"
    refusals_rc=1
  fi
}
log "step 5: refusals over plain HTTP"
expect "no token" 401 UNAUTHENTICATED "$prefix_a?access=read"
expect "caller B asks for tenants/a/" 403 PERMISSION_DENIED "$prefix_a?access=read" -H "Authorization: $token_b"
expect "caller A asks for a prefix outside its rules (tenants/c/)" 403 PERMISSION_DENIED "tenants/c/?access=read" \
  -H "Authorization: $token_a"
expect "tenants/a without its trailing slash" 400 INVALID_ARGUMENT "tenants/a?access=read" -H "Authorization: $token_a"
expect "'Bearer <token>' works as well as the raw token" 200 None "$prefix_a?access=read" -H "Authorization: Bearer $token_a"
# STS down: moto stopped, and a scope the service holds no cached credentials for.
stop_process "$moto_pid"
moto_pid=""
expect "STS (moto) stopped" 503 UNAVAILABLE "$prefix_b?access=read" -H "Authorization: $token_b"
retry_after=$(tr -d '\r' <"$work/answer.headers" | sed -n 's/^[Rr]etry-[Aa]fter: *//p')
if [[ $retry_after =~ ^[0-9]+$ ]]; then
  log "ok   the 503 says Retry-After: $retry_after"
else
  log "FAIL the 503 has no numeric Retry-After header"
  refusals_rc=1
fi
verdict "5. refusals: 401, 403, 403, 400, 503 + Retry-After" "$refusals_rc"

# No caller token, and no secret key or session token the SDKs were given, appears in
# anything the service or the proxy wrote (stdout and stderr, at debug level).
leak_rc=0
app_token=$(cat "$work/app-token" 2>/dev/null || true)
for file in server.log proxy.log; do
  for token in "$token_a" "$token_b" ${app_token:+"$app_token"}; do
    if grep -qF -- "$token" "$work/$file"; then
      log "FAIL a caller token appears in $file"
      leak_rc=1
    fi
  done
  if [[ -s $work/issued-secrets ]] && grep -qF -f "$work/issued-secrets" "$work/$file"; then
    log "FAIL a secret access key or session token handed to an SDK appears in $file"
    leak_rc=1
  fi
  log "checked $file ($(wc -l <"$work/$file") lines at debug level): no caller token, no issued secret"
done
if [[ ! -s $work/issued-secrets ]]; then
  log "FAIL the SDK steps recorded no issued secrets to look for"
  leak_rc=1
fi
verdict "5. no token or issued secret in the service's or the proxy's log" "$leak_rc"

# --- summary ------------------------------------------------------------------------------------

if ((${#failed[@]} > 0)); then
  log "failed: server, proxy and STS logs, secrets masked:"
  log_tail "$work/server.log" 60
  log_tail "$work/proxy.log" 20
  [[ ! -f $work/moto.log ]] || log_tail "$work/moto.log" 20
fi
for step in "${passed[@]}"; do log "passed: $step"; done
for step in "${failed[@]+"${failed[@]}"}"; do log "FAILED: $step"; done
echo "sdk-credentials-test: ${#passed[@]} passed, ${#failed[@]} failed"
((${#failed[@]} == 0)) || exit 1
