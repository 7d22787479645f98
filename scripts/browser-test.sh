#!/usr/bin/env bash
# The HTTP gateway in a real browser, everything on 127.0.0.1 only:
#
# 1. s3s-fs (random per-run keys) behind a test-only CORS shim (tests/browser/cors-shim.mjs)
#    that answers preflight and adds the headers an S3 bucket CORS rule adds, and
#    forwards every other request unchanged, Host included, so s3s-fs still verifies
#    every signature; the service's storage endpoint is the shim, so presigned URLs
#    point at it;
# 2. a test identity: an ES256 key pair, its JWKS file and a JWT for the test caller
#    (tests/browser/jwt.mjs); the service verifies it with [identity.jwt], and the
#    gateway reads it from the session cookie;
# 3. the service with the gateway on (`[http]`), its gRPC port used first to prove the
#    store path without a browser (tests/browser/store-check.mjs: presigned PUT, POST
#    form, GET, a tampered signature refused, CORS through the shim);
# 4. headless Chromium (Debian's chromium, playwright-core) on a test page from its own
#    origin that bundles @uppy/core and @uppy/aws-s3 (esbuild) (tests/browser/run.mjs):
#    click-time links to stored objects read back the exact bytes (SHA-256), also for a
#    key that needs percent-encoding; a context without the cookie is sent to the login
#    URL, a client without identity gets 401 JSON; a small file (POST form) and a 6 MiB
#    file (multipart, two parts) go straight to the store through Uppy and links read
#    them back; the app's own JS signs an upload with POST /v1/uploads (cross-origin,
#    with the cookie); the presigned target URL is refused by the store after its
#    expiry (the read rule's max_ttl is 3 s).
#
# Usage: scripts/browser-test.sh [--store-only] [SERVER_BINARY]
#   SERVER_BINARY  an already-built server (default: target/debug/storage-grants);
#                  this script does not build it: run `cargo build` first.
#   --store-only   without the gateway: steps 1-3 with no [http] section, then only
#                  bundle the page and load it in Chromium.
# Exit code: 0 when every check passed, 1 when a check failed, 2 when it could not be set up.
set -euo pipefail

# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { echo "browser-test: $*" >&2; }

store_only=false
if [[ ${1:-} == --store-only ]]; then
  store_only=true
  shift
fi
root=$(repo_root)
server_bin=$(server_binary "${1:-}") || exit 2
command -v node >/dev/null || { log "node (20 or later) is needed"; exit 2; }

work="" s3_pid="" shim_pid="" server_pid=""
cleanup() {
  local rc=$?
  stop_process "$server_pid"
  stop_process "$shim_pid"
  stop_process "$s3_pid"
  [[ -z $work ]] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools (slow only on a fresh machine) ------------------------------------------------

log "step: tools (s3s-fs, buf, chromium, tests/browser packages)"
ensure_s3s_fs >/dev/null || exit 2
buf=$(ensure_node_tools) || exit 2
chromium_bin=$(ensure_chromium) || exit 2
browser_dir=$(ensure_browser_test_deps) || exit 2

work=$(mktemp -d "${TMPDIR:-/tmp}/storage-grants-browser.XXXXXX")
mkdir -p "$work/s3" "$work/server"

bucket=demo
prefix=web/
caller="user:browser-test-$(random_hex 4)"
issuer="https://idp.storage-grants.test"
audience="storage-grants-gateway"
cookie=sg_session

s3_port=$(free_port)
shim_port=$(free_port)
grpc_port=$(free_port)
http_port=$(free_port)
page_port=$(free_port)
# Two hosts of one site, as app.example.com and files.example.com would be; Chromium
# resolves both to loopback (tests/browser/run.mjs), the store stays on another site.
page_origin="http://app.storage-grants.test:$page_port"
shim_origin="http://127.0.0.1:$shim_port"
gateway_origin="http://files.storage-grants.test:$http_port"
login_url="$page_origin/login"

# --- 1. the store and its CORS shim ----------------------------------------------------

log "step: s3s-fs with per-run keys, bucket $bucket"
access_key="SGTEST$(random_hex 6)"
secret_key=$(random_hex 20)
mkdir -p "$work/s3/$bucket"
# Objects for the link checks, as plain files (s3s-fs serves ROOT/BUCKET/KEY): one
# plain key, one that needs percent-encoding in a URL path.
fixture_plain="${prefix}fixture/welcome.txt"
fixture_tricky="${prefix}fixture/Grüße a+b 100%.txt"
mkdir -p "$work/s3/$bucket/${prefix}fixture"
printf 'welcome, browser test %s\n' "$(random_hex 8)" >"$work/s3/$bucket/$fixture_plain"
printf 'a key that needs encoding %s\n' "$(random_hex 8)" >"$work/s3/$bucket/$fixture_tricky"
python3 -c 'import json, sys; b = sys.argv[1]; print(json.dumps([{"key": k, "file": b + "/" + k} for k in sys.argv[2:]]))' \
  "$work/s3/$bucket" "$fixture_plain" "$fixture_tricky" >"$work/fixtures.json"
s3_pid=$(start_s3s_fs "$work/s3" "$s3_port" "$access_key" "$secret_key" "$work/s3s-fs.log") || exit 2
log "s3s-fs on 127.0.0.1:$s3_port (pid $s3_pid)"

log "step: CORS shim on $shim_origin in front of s3s-fs (allowed origin $page_origin)"
node "$browser_dir/cors-shim.mjs" "$shim_port" "$s3_port" "$page_origin" </dev/null >"$work/shim.log" 2>&1 &
shim_pid=$!
if ! wait_for_port 127.0.0.1 "$shim_port" 10 "$shim_pid"; then
  log_tail "$work/shim.log"
  exit 2
fi

# --- 2. the test identity ------------------------------------------------------------------

log "step: ES256 key pair, JWKS and a JWT for caller $caller"
timeout 30 node "$browser_dir/jwt.mjs" "$work/server" "$issuer" "$audience" "$caller" 3600 || exit 2

# --- 3. the service -------------------------------------------------------------------------

log "step: config, rules and the service (gRPC 127.0.0.1:$grpc_port$($store_only || echo ", gateway $gateway_origin"))"
cat >"$work/server/config.toml" <<EOF
listen = "127.0.0.1:$grpc_port"

[storage]
region = "us-east-1"
# The CORS shim in front of s3s-fs: presigned URLs point at it.
endpoint = "$shim_origin"
force_path_style = true

[grants]
default_ttl = "5m"
max_ttl = "1h"
rules_file = "rules.toml"

[identity.jwt]
issuer = "$issuer"
audiences = ["$audience"]
jwks_file = "$work/server/jwks.json"
EOF
if ! $store_only; then
  cat >>"$work/server/config.toml" <<EOF

[http]
listen = "127.0.0.1:$http_port"
allowed_origins = ["$page_origin"]
session_cookie = "$cookie"
login_url = "$login_url"
upload_bucket = "$bucket"
EOF
fi
# Writes under web/ for up to 10 minutes; reads there live 3 s, so the expiry check
# waits seconds, not minutes.
cat >"$work/server/rules.toml" <<EOF
[[rules]]
description = "browser test: uploads"
callers = ["$caller"]
bucket = "$bucket"
prefix = "$prefix"
actions = ["write"]
max_ttl = "10m"

[[rules]]
description = "browser test: click-time links, short-lived"
callers = ["$caller"]
bucket = "$bucket"
prefix = "$prefix"
actions = ["read"]
max_ttl = "3s"
EOF

: >"$work/aws-config"
: >"$work/aws-credentials"
server_env=(env)
while IFS= read -r name; do server_env+=(-u "$name"); done < <(compgen -e | grep -E '^(STORAGE_GRANTS_|AWS_)' || true)
server_env+=(
  AWS_ACCESS_KEY_ID="$access_key"
  AWS_SECRET_ACCESS_KEY="$secret_key"
  AWS_REGION=us-east-1
  AWS_CONFIG_FILE="$work/aws-config"
  AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
  AWS_EC2_METADATA_DISABLED=true
)
config="$work/server/config.toml"
if ! "${server_env[@]}" "$server_bin" --config "$config" --check-config >"$work/check-config.log" 2>&1; then
  log "the server rejected the test config (--check-config):"
  log_tail "$work/check-config.log"
  if ! $store_only && grep -qi 'http' "$work/check-config.log"; then
    log "this server does not know the [http] section: it has no gateway (try --store-only)"
  fi
  exit 2
fi
"${server_env[@]}" "$server_bin" --config "$config" serve </dev/null >"$work/server.log" 2>&1 &
server_pid=$!
if ! wait_for_port 127.0.0.1 "$grpc_port" 20 "$server_pid"; then
  log "storage-grants did not come up on 127.0.0.1:$grpc_port"
  log_tail "$work/server.log"
  exit 2
fi
log "storage-grants on 127.0.0.1:$grpc_port (pid $server_pid)"

declare -a passed=() failed=()
verdict() { # NAME RC
  if (($2 == 0)); then passed+=("$1"); else failed+=("$1"); fi
}

log "step: the store path without a browser (gRPC grants used through the shim)"
rc=0
BUF="$buf" SG_GRPC="127.0.0.1:$grpc_port" SG_TOKEN_FILE="$work/server/session.jwt" \
  SHIM_ORIGIN="$shim_origin" PAGE_ORIGIN="$page_origin" BUCKET="$bucket" PREFIX="$prefix" \
  timeout 120 node "$browser_dir/store-check.mjs" || rc=$?
verdict "store path through the CORS shim" "$rc"

# --- 4. the browser --------------------------------------------------------------------------

browser_env=(
  env CHROMIUM="$chromium_bin" PAGE_PORT="$page_port" GATEWAY_ORIGIN="$gateway_origin"
  SHIM_ORIGIN="$shim_origin" BUCKET="$bucket" PREFIX="$prefix" TOKEN_FILE="$work/server/session.jwt"
  COOKIE_NAME="$cookie" LOGIN_URL="$login_url" FIXTURES_FILE="$work/fixtures.json"
)
rc=0
if $store_only; then
  log "step: the page bundle in Chromium (no gateway: --store-only)"
  (cd "$browser_dir" && "${browser_env[@]}" timeout 180 node run.mjs smoke) || rc=$?
  verdict "page bundle loads in Chromium" "$rc"
else
  if ! wait_for_port 127.0.0.1 "$http_port" 10 "$server_pid"; then
    log "the gateway did not listen on $gateway_origin"
    log_tail "$work/server.log"
    exit 1
  fi
  log "step: the browser checks against the gateway on $gateway_origin"
  (cd "$browser_dir" && "${browser_env[@]}" timeout 420 node run.mjs full) || rc=$?
  verdict "browser: Uppy uploads, click-time links, login redirect, expiry" "$rc"
fi

if ((${#failed[@]} > 0)); then
  log_tail "$work/shim.log" 60
  log_tail "$work/server.log" 60
  log_tail "$work/s3s-fs.log" 30
fi
for name in "${passed[@]}"; do log "PASS $name"; done
for name in "${failed[@]}"; do log "FAIL $name"; done
if ((${#failed[@]} > 0)); then
  exit 1
fi
log "all browser test steps passed"
