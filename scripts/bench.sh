#!/usr/bin/env bash
# Load benchmarks of the release binary with an independent HTTP/2 load tool (h2load,
# Debian nghttp2-client), against a real store (s3s-fs) and a real STS (moto), all on
# 127.0.0.1. Not part of the test command: it reports figures and asserts none of them.
#
# 1. throughput: every gRPC call below runs with the same h2load parameters (one
#    thread, CONNECTIONS x STREAMS, a warm-up, then DURATION seconds), and each is
#    reported as calls/s and as a ratio to the gRPC health check measured on the same
#    server in the same round, which runs before every call and once more at the end of
#    the round: each ratio is against the mean of the two baseline runs around the call
#    (drift of the machine's speed during a round cancels out):
#      grpc.health.v1.Health/Check (baseline), GrantRead (audit log on: the default
#      level), GrantRead again as a caller with an ES256 JWT (signed for this run) and
#      as a mesh caller (an x-forwarded-client-cert header as Istio's sidecar writes it,
#      from a trusted peer; the other rows use a dev token), GrantWrite PUT with every
#      pin (type, length, checksum, two metadata entries, create-only), GrantWrite PUT
#      with the type and length only (what a browser upload pins), AssumeScoped (cache
#      hit, warmed first), and, on a server restarted with RUST_LOG=warn, the baseline
#      and GrantRead again;
#    the HTTP gateway: the click-time link GET /v1/objects/demo/public/hello.txt (302)
#    against GET /healthz on the same listener, HTTP/1.1 (h2load --h1, 64 connections,
#    one request in flight each: the same 64 in flight as the gRPC runs).
#    Every run must answer only successes: h2load's status counts (2xx, or 3xx for the
#    link), no failed/errored requests, and for gRPC the server's own
#    storage_grants_rpc_duration_seconds counts (metrics port) must show only code OK
#    for that method (h2load cannot see grpc-status, which travels in trailers). Before
#    the runs each request body is sent once with curl and must answer grpc-status 0,
#    and GrantRead once more with buf curl through server reflection.
# 2. latency: GrantRead at half its measured maximum rate, p50/p90/p99 from h2load's
#    per-request log, under two loads: steady (closed loop on the fewest streams whose
#    rate reaches half the maximum) and h2load --rps (which releases calls in 10 ms
#    bursts); each followed by the health check under the same load, the floor that
#    the load tool, the kernel and the shared CPUs put under any call.
# 3. memory: the server's VmRSS (/proc/PID/status) is sampled every second during all
#    runs (peak per server). A soak on a fresh server then cycles SCOPES distinct
#    AssumeScoped scopes through the STS cache (moto behind it): first every scope once
#    (cache fill, one STS call each), then SOAK seconds at half the measured maximum
#    rate over the same scopes. The scopes are carried in the request path, so the
#    soak drives the gateway's container-credentials endpoint
#    (GET /v1/credentials/demo/public/soak/NNNNN/?access=read), which is AssumeScoped
#    through the same pipeline and the same cache (h2load sends one fixed body, so a
#    gRPC run cannot vary the scope). RSS is written as CSV and plotted as PNG.
# 4. The tables (Markdown) go to stdout and to OUT/results.md.
#
# Usage: scripts/bench.sh [--duration S] [--warmup S] [--rounds N] [--soak S]
#                         [--scopes N] [--out DIR] [--no-build] [--binary PATH]
#                         [--perf] [--pin] [--instructions N] [--serve]
#   --duration S  about how long each measured throughput run lasts (default 10): a
#                 fixed request count, the warm-up's rate times S
#   --warmup S    h2load warm-up seconds before each run (default 2)
#   --rounds N    rounds of the throughput runs (default 3); the table shows the
#                 median and the range of the per-round ratios
#   --soak S      soak seconds after the cache fill (default 60; the report used 300)
#   --scopes N    distinct AssumeScoped scopes in the soak (default 10000)
#   --out DIR     where results.md, rss.csv, soak.png and the logs go
#                 (default target/bench/); each server's log keeps its last run; the
#                 soak's audit lines (about 8 GB in a 300 s soak) are removed once the
#                 soak is over, so that much disk must be free while it runs
#   --no-build    use target/release/storage-grants as it is
#   --binary PATH measure this build of storage-grants instead (implies --no-build), e.g.
#                 an older commit's, to compare with --instructions
#   --perf        also record one GrantRead run with `perf record -g` (OUT/perf.data,
#                 OUT/perf-report.txt)
#   --pin         the service on CPU 0 and every h2load on CPU 1 (taskset): the
#                 service is then the bottleneck, and the ratios are those of its own
#                 cost per call, steady to about 2 % between runs. Unpinned, the load
#                 tool and the service share both CPUs, the ratios include the load
#                 tool's cost per call, and a run can move 10 % with where the
#                 scheduler puts the threads. Needs 2 CPUs or more.
#   --instructions N
#                 instead of everything above: the server under valgrind's callgrind,
#                 N calls of each RPC (and of each gateway route), and the server's
#                 instructions per call (all its threads, user space) as a ratio to the
#                 health check's, in OUT/instructions.md. Instruction counts do not
#                 depend on what else the machine runs, so fixes can be compared across
#                 runs; they leave out the kernel's share, and under valgrind sha2 takes
#                 its portable code (no SHA extensions), so signing counts high.
#   --serve       instead of any run: set everything up as for the runs (store, STS,
#                 service with the bench's config, request bodies checked), print the
#                 h2load command of every row (also in OUT/serve.txt; the bodies in
#                 OUT/frames) and keep serving until interrupted (Ctrl-C), to drive
#                 the service with a load tool and parameters of one's own.
# Exit code: 0 when every run answered successes only, 1 when some run had failures
# (the tables still print), 2 when the setup failed.
set -euo pipefail

# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { echo "bench: $*" >&2; }

duration=10 warmup=2 rounds=3 soak=60 scopes=10000 out="" build=1 perf=0 pin=0 instructions=0 binary="" serve=0
while (($#)); do
  case $1 in
  --duration) duration=$2; shift 2 ;;
  --warmup) warmup=$2; shift 2 ;;
  --rounds) rounds=$2; shift 2 ;;
  --soak) soak=$2; shift 2 ;;
  --scopes) scopes=$2; shift 2 ;;
  --out) out=$2; shift 2 ;;
  --no-build) build=0; shift ;;
  --binary) binary=$2; build=0; shift 2 ;;
  --perf) perf=1; shift ;;
  --pin) pin=1; shift ;;
  --instructions) instructions=$2; shift 2 ;;
  --serve) serve=1; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) log "unknown argument $1 (see --help)"; exit 2 ;;
  esac
done
for n in "$duration" "$warmup" "$rounds" "$soak" "$scopes" "$instructions"; do
  [[ $n =~ ^[0-9]+$ ]] || { log "durations and counts are whole numbers, not '$n'"; exit 2; }
done
((duration > 0 && warmup > 0 && rounds > 0 && soak > 0 && scopes > 0)) || { log "the durations and counts must be positive"; exit 2; }
((!serve || instructions == 0)) || { log "--serve and --instructions are two different modes: choose one"; exit 2; }

# Every h2load run: one thread, 4 connections x 16 concurrent streams.
CONNECTIONS=4 STREAMS=16

root=$(repo_root)
out=${out:-$root/target/bench}
mkdir -p "$out"
out=$(cd "$out" && pwd)
server_bin=${binary:-$root/target/release/storage-grants}

# --- tools ------------------------------------------------------------------------------

h2load=$(ensure_h2load)
# How every load run starts h2load (pinned to CPU 1 with --pin).
load=("$h2load")
if ((pin)); then
  (($(nproc) >= 2)) || { log "--pin needs 2 CPUs or more"; exit 2; }
  load=(taskset -c 1 "$h2load")
fi
gnuplot=$(ensure_gnuplot)
ensure_s3s_fs >/dev/null
buf=$(ensure_node_tools)
python=$(ensure_python_venv)
if ((build)); then
  log "building the release binary (nice -n 10 cargo build --release --bin storage-grants)"
  (cd "$root" && nice -n 10 cargo build --release --locked --bin storage-grants) >&2
fi
[[ -x $server_bin ]] || { log "$server_bin is missing; run without --no-build"; exit 2; }

work="" s3_pid="" moto_pid="" server_pid="" sampler_pid=""
cleanup() {
  local rc=$?
  [[ -z $work ]] || rm -f "$work/sampling"
  stop_process "$sampler_pid" 3
  stop_process "$server_pid"
  stop_process "$moto_pid"
  stop_process "$s3_pid"
  [[ -z $work ]] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d "${TMPDIR:-/tmp}/storage-grants-bench.XXXXXX")
logs=$out/logs
rm -rf "$logs"
mkdir -p "$logs"

# --- store, STS, request bodies ------------------------------------------------------------

access_key="SGBENCH$(random_hex 6)"
secret_key=$(random_hex 20)
token="dev-$(random_hex 12)"
bucket=demo
mkdir -p "$work/s3/$bucket/public"
printf 'hello from storage-grants\n' >"$work/s3/$bucket/public/hello.txt"
s3_port=$(free_port)
s3_pid=$(start_s3s_fs "$work/s3" "$s3_port" "$access_key" "$secret_key" "$logs/s3s-fs.log")
moto_port=$(free_port)
moto_pid=$(start_moto "$moto_port" "$logs/moto.log")
log "s3s-fs on 127.0.0.1:$s3_port, moto on 127.0.0.1:$moto_port"

frames=$work/frames
"$python" "$root/benches/load/frames.py" "$root" "$frames" "$bucket" >&2

# Soak URIs: SCOPES distinct prefixes, one AssumeScoped scope each.
grpc_port=$(free_port)
http_port=$(free_port)
metrics_port=$(free_port)
for ((i = 0; i < scopes; i++)); do
  printf 'http://127.0.0.1:%s/v1/credentials/%s/public/soak/%05d/?access=read\n' "$http_port" "$bucket" "$i"
done >"$work/soak-uris.txt"

mkdir -p "$work/server"
# A second caller with a JWT (ES256, from a key pair made for this run), as production
# callers present: the dev token's check is a hash lookup, a JWT's a signature check.
jwt_issuer=https://issuer.bench.invalid jwt_audience=storage-grants-bench jwt_caller=user:bench-jwt
node "$root/tests/browser/jwt.mjs" "$work/server" "$jwt_issuer" "$jwt_audience" "$jwt_caller" 86400 ||
  { log "could not make the bench's JWT"; exit 2; }
jwt=$(<"$work/server/session.jwt")
# A third caller, through the service mesh: the header Istio's sidecar adds for the
# client certificate it verified (the sidecar being this host, a trusted peer).
xfcc_caller=spiffe://cluster.local/ns/bench/sa/mesh-load
xfcc="By=spiffe://cluster.local/ns/storage/sa/storage-grants;Hash=2d6d8a1e4f8b7c1f0e0b6d1e9a3f0c2b7d5e4a9c8b7a6f5e4d3c2b1a0f9e8d7c;Subject=\"\";URI=$xfcc_caller"
# The header line each caller presents on a run.
as_dev="authorization: Bearer $token" as_jwt="authorization: Bearer $jwt" as_mesh="x-forwarded-client-cert: $xfcc"
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
token = "$token"
caller = "dev:bench"

[identity.jwt]
issuer = "$jwt_issuer"
audiences = ["$jwt_audience"]
jwks_file = "$work/server/jwks.json"

[identity.xfcc]
enabled = true
trusted_peers = ["127.0.0.1/32"]
trust_domains = ["cluster.local"]

[sts]
role_arn = "arn:aws:iam::123456789012:role/storage-grants-bench"
endpoint = "http://127.0.0.1:$moto_port"
storage_endpoint = "http://127.0.0.1:$moto_port"
role_chaining = false

[metrics]
listen = "127.0.0.1:$metrics_port"

# One caller drives all the load here (another for each of the JWT and mesh rows):
# per-caller budgets are lifted so that every call is served (the budget checks themselves
# still run on every call).
[limits]
grants_per_second = 10000000
grants_burst = 10000000
sts_misses_per_minute = 10000000
sts_misses_burst = 10000000

[http]
listen = "127.0.0.1:$http_port"
allowed_origins = ["http://127.0.0.1:$http_port"]
upload_bucket = "$bucket"
EOF
cat >"$work/server/rules.toml" <<EOF
[[rules]]
callers = ["dev:bench", "$jwt_caller", "$xfcc_caller"]
bucket = "$bucket"
prefix = "public/"
actions = ["read", "write", "assume-read", "assume-write", "list"]
max_ttl = "1h"
EOF
: >"$work/aws-config"
: >"$work/aws-credentials"
server_env=(env)
while IFS= read -r name; do server_env+=(-u "$name"); done < <(compgen -e | grep -E '^(STORAGE_GRANTS_|OTEL_|RUST_LOG$)' || true)
server_env+=(
  -u AWS_SESSION_TOKEN -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_ENDPOINT_URL
  AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" AWS_REGION=us-east-1
  AWS_CONFIG_FILE="$work/aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
  AWS_EC2_METADATA_DISABLED=true
)
config=$work/server/config.toml
if ! "${server_env[@]}" "$server_bin" --config "$config" --check-config >"$logs/check-config.log" 2>&1; then
  log "the server rejected the bench config:"
  log_tail "$logs/check-config.log"
  exit 2
fi

# --- server and RSS sampling ----------------------------------------------------------------

# The sampler follows whichever server runs now (its PID in $work/server.pid) and tags
# each sample with the current phase ($work/phase): seconds since start, VmRSS (KiB), phase.
# Under --instructions the server runs in valgrind: its RSS means nothing, and must not
# replace a recorded run's samples in OUT.
rss_csv=$out/rss.csv
((instructions == 0)) || rss_csv=$work/rss.csv
echo "t_seconds,rss_kib,phase" >"$rss_csv"
echo setup >"$work/phase"
: >"$work/server.pid"
touch "$work/sampling"
(
  start=$(date +%s.%N)
  while [[ -e $work/sampling ]]; do
    pid=$(<"$work/server.pid")
    phase=$(<"$work/phase")
    if [[ -n $pid ]]; then
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      [[ -z $rss ]] || printf '%.1f,%s,%s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$rss" "$phase" >>"$rss_csv"
    fi
    sleep 1
  done
) &
sampler_pid=$!

server_wrapper=()
((pin)) && server_wrapper=(taskset -c 0)
# start_server NAME [ENV...]: a fresh server with the bench config; its log goes to
# $logs/server-NAME.log (appended, so it can be truncated between runs).
server_log="" server_name=""
start_server() {
  local name=$1
  shift
  server_name=$name
  stop_process "$server_pid"
  : >"$work/server.pid"
  server_log=$logs/server-$name.log
  : >"$server_log"
  "${server_env[@]}" "$@" "${server_wrapper[@]}" "$server_bin" --config "$config" serve </dev/null >>"$server_log" 2>&1 &
  server_pid=$!
  for port in "$grpc_port" "$http_port" "$metrics_port"; do
    if ! wait_for_port 127.0.0.1 "$port" "$(((${#server_wrapper[@]} > 0) ? 180 : 20))" "$server_pid"; then
      log_tail "$server_log"
      log "storage-grants did not come up"
      exit 2
    fi
  done
  echo "$server_pid" >"$work/server.pid"
  log "server '$name' up (pid $server_pid): gRPC :$grpc_port, HTTP :$http_port, metrics :$metrics_port"
}

# --- checks of the request bodies -----------------------------------------------------------

# What every gRPC request carries besides its bearer token.
grpc_headers=(-H 'content-type: application/grpc' -H 'te: trailers')
grpc_url() { echo "http://127.0.0.1:$grpc_port/$1"; }
declare -A path_of=(
  [health]=grpc.health.v1.Health/Check
  [grant_read]=storagegrants.v1.GrantService/GrantRead
  [grant_write_put]=storagegrants.v1.GrantService/GrantWrite
  [grant_write_put_type_length]=storagegrants.v1.GrantService/GrantWrite
  [assume_scoped]=storagegrants.v1.GrantService/AssumeScoped
)
declare -A method_of=([health]=Check [grant_read]=GrantRead [grant_write_put]=GrantWrite
  [grant_write_put_type_length]=GrantWrite [assume_scoped]=AssumeScoped)

failures=0
fail() { log "FAILED: $*"; failures=$((failures + 1)); }

# check_frame NAME: sends the exact body h2load will send, once, with curl over h2c,
# and requires HTTP 200 and grpc-status 0 (curl writes the trailers with the headers).
check_frame() {
  local name=$1 headers=$work/curl-$1.headers
  curl -sS --http2-prior-knowledge -o /dev/null -D "$headers" --max-time 10 \
    "${grpc_headers[@]}" -H "$as_dev" \
    --data-binary "@$frames/$name.bin" "$(grpc_url "${path_of[$name]}")" || true
  if grep -qi '^grpc-status: *0' "$headers" && head -n1 "$headers" | grep -q ' 200'; then
    log "request body $name.bin: grpc-status 0"
  else
    fail "request body $name.bin did not answer grpc-status 0: $(tr -d '\r' <"$headers" | grep -i '^grpc-\|^HTTP' | tr '\n' ' ' | redact_secrets)"
  fi
}

# --- h2load runs ---------------------------------------------------------------------------

# Each run is a warm-up (h2load for WARMUP seconds, which also estimates the rate) and
# then a measured run of a fixed request count, about DURATION seconds at that rate. A
# fixed count lets every request finish, so the server's own counts must match exactly.
# Rows of results: ROUND|GROUP|LABEL|rate|checks|server log bytes per call
declare -A rate=()
peak_kib() { # PHASE-PREFIX: peak VmRSS (KiB) sampled in phases starting with it
  awk -F, -v p="$1" 'NR > 1 && index($3, p) == 1 && $2 > m {m = $2} END {print m + 0}' "$rss_csv"
}
metrics_snapshot() {
  "$python" "$root/benches/load/report.py" metrics "http://127.0.0.1:$metrics_port/metrics" >"$1"
}
h2() { "$python" "$root/benches/load/report.py" h2load "$1"; }
# count_for LOG: the request count for DURATION seconds at the warm-up's rate (whole
# multiples of the connections, at least 1000).
count_for() {
  local rps=0 total succeeded failed errored timeout s2xx s3xx s4xx s5xx
  eval "$(h2 "$1")"
  local n=$((rps * duration))
  ((n >= 1000)) || n=1000
  echo $((n / (CONNECTIONS * STREAMS) * CONNECTIONS * STREAMS))
}

# grpc_run ROUND GROUP LABEL NAME [CALLER]: warm-up and measured run of request body NAME
# (as the dev token's caller, or with the caller header line CALLER: $as_jwt, $as_mesh).
grpc_run() {
  local round=$1 group=$2 label=$3 name=$4 caller=${5:-$as_dev}
  local slug=${label//[^A-Za-z0-9]/_}-r$round-$(wc -l <"$work/rows")
  local -a args=(-t 1 -c "$CONNECTIONS" -m "$STREAMS"
    "${grpc_headers[@]}" -H "$caller"
    -d "$frames/$name.bin" "$(grpc_url "${path_of[$name]}")")
  echo "$server_name/$slug" >"$work/phase"
  "${load[@]}" -D "$warmup" "${args[@]}" >"$logs/h2load-$slug-warmup.txt" 2>&1 || true
  local count
  count=$(count_for "$logs/h2load-$slug-warmup.txt")
  sleep 0.2
  metrics_snapshot "$work/before"
  : >"$server_log"
  "${load[@]}" -n "$count" "${args[@]}" >"$logs/h2load-$slug.txt" 2>&1 || true
  metrics_snapshot "$work/after"
  local rps total succeeded failed errored timeout s2xx s3xx s4xx s5xx ok cancelled not_ok codes
  eval "$(h2 "$logs/h2load-$slug.txt")"
  eval "$("$python" "$root/benches/load/report.py" delta "$work/before" "$work/after" "${method_of[$name]}")"
  local verdict="$s2xx/$count 2xx, server: $ok OK"
  if ((succeeded != count || s2xx != count || failed + errored + timeout > 0 || ok != count ||
    cancelled + not_ok > 0)); then
    fail "$label (round $round): $succeeded of $count succeeded, $failed failed, $errored errored, $timeout timeout, status 2xx/3xx/4xx/5xx $s2xx/$s3xx/$s4xx/$s5xx, server codes: $ok OK, $cancelled CANCELLED, others $codes (see $logs/h2load-$slug.txt)"
    verdict="FAILED: $verdict, $cancelled CANCELLED, others $codes"
  fi
  rate["$label"]=$rps
  local log_bytes
  log_bytes=$(stat -c %s "$server_log")
  printf '%s|%s|%s|%s|%s|%s\n' "$round" "$group" "$label" "$rps" "$verdict" "$((log_bytes / (total > 0 ? total : 1)))" >>"$work/rows"
  log "round $round: $label: $rps calls/s ($verdict)"
}

# http_run ROUND LABEL PATH STATUS: h2load --h1 against the gateway; STATUS is 2xx or 3xx.
http_run() {
  local round=$1 label=$2 path=$3 want=$4
  local slug=${label//[^A-Za-z0-9]/_}-r$round-$(wc -l <"$work/rows")
  local -a args=(--h1 -t 1 -c $((CONNECTIONS * STREAMS)) -m 1 -H "$as_dev"
    "http://127.0.0.1:$http_port$path")
  echo "$server_name/$slug" >"$work/phase"
  "${load[@]}" -D "$warmup" "${args[@]}" >"$logs/h2load-$slug-warmup.txt" 2>&1 || true
  local count
  count=$(count_for "$logs/h2load-$slug-warmup.txt")
  : >"$server_log"
  "${load[@]}" -n "$count" "${args[@]}" >"$logs/h2load-$slug.txt" 2>&1 || true
  local rps total succeeded failed errored timeout s2xx s3xx s4xx s5xx
  eval "$(h2 "$logs/h2load-$slug.txt")"
  local good
  if [[ $want == 2xx ]]; then good=$s2xx; else good=$s3xx; fi
  local verdict="$good/$count $want"
  if ((good != count || failed + errored + timeout > 0)); then
    fail "$label (round $round): $good of $count $want, status 2xx/3xx/4xx/5xx $s2xx/$s3xx/$s4xx/$s5xx, $failed failed, $errored errored, $timeout timeout (see $logs/h2load-$slug.txt)"
    verdict="FAILED: $verdict"
  fi
  rate["$label"]=$rps
  local log_bytes
  log_bytes=$(stat -c %s "$server_log")
  printf '%s|%s|%s|%s|%s|%s\n' "$round" http "$label" "$rps" "$verdict" "$((log_bytes / (total > 0 ? total : 1)))" >>"$work/rows"
  log "round $round: $label: $rps requests/s ($verdict)"
}
: >"$work/rows"

# --- instructions per call (--instructions N): callgrind, then stop ------------------------

if ((instructions > 0)); then
  ensure_valgrind >/dev/null
  dumps=$work/callgrind
  mkdir -p "$dumps"
  server_wrapper=(valgrind --tool=callgrind --dump-instr=no "--callgrind-out-file=$dumps/out.%p")
  start_server callgrind
  for name in health grant_read grant_write_put grant_write_put_type_length assume_scoped; do check_frame "$name"; done
  callgrind_control -z "$server_pid" >/dev/null
  declare -a labels=()
  count_run() { # LABEL NAME-OR-PATH KIND [CALLER-HEADER]
    local label=$1 what=$2 kind=$3 caller=${4:-$as_dev} out=$logs/h2load-instructions-${#labels[@]}.txt
    if [[ $kind == grpc ]]; then
      "${load[@]}" -t 1 -c "$CONNECTIONS" -m "$STREAMS" -n "$instructions" \
        "${grpc_headers[@]}" -H "$caller" \
        -d "$frames/$what.bin" "$(grpc_url "${path_of[$what]}")" >"$out" 2>&1 || true
    else
      "${load[@]}" --h1 -t 1 -c 64 -n "$instructions" -H "$as_dev" \
        "http://127.0.0.1:$http_port$what" >"$out" 2>&1 || true
    fi
    grep -q "^requests: $instructions total, $instructions started, $instructions done, $instructions succeeded" "$out" ||
      fail "$label: not every call succeeded ($(grep '^requests:' "$out"))"
    callgrind_control -d "run${#labels[@]}" "$server_pid" >/dev/null
    labels+=("$label")
  }
  count_run "health check (baseline)" health grpc
  count_run "GrantRead, audit log on" grant_read grpc
  count_run "GrantRead, JWT caller (ES256)" grant_read grpc "$as_jwt"
  count_run "GrantRead, mesh caller (XFCC)" grant_read grpc "$as_mesh"
  count_run "GrantWrite PUT, all pins" grant_write_put grpc
  count_run "GrantWrite PUT, type and length pinned" grant_write_put_type_length grpc
  count_run "AssumeScoped, cache hit" assume_scoped grpc
  count_run "gateway GET /healthz (baseline)" /healthz http
  count_run "gateway click-time link (302)" "/v1/objects/$bucket/public/hello.txt" http
  stop_process "$server_pid"
  server_pid=""
  {
    echo "## storage-grants: server instructions per call ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "valgrind $(valgrind --version | sed 's/valgrind-//'), callgrind; $instructions calls of each; release binary at $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown); h2load as in the throughput runs."
    echo
    echo "| calls | instructions per call | vs its baseline |"
    echo "|---|---:|---:|"
    base=0
    for i in "${!labels[@]}"; do
      file=$(grep -lx "desc: Trigger: dump run$i" "$dumps"/out.* 2>/dev/null | head -1 || true)
      total=$([[ -n $file ]] && awk '/^summary:/ {print $2}' "$file" || echo 0)
      per=$((total / instructions))
      [[ ${labels[$i]} == *baseline* ]] && base=$per
      echo "| ${labels[$i]} | $per | $(awk -v p="$per" -v b="$base" 'BEGIN {if (b > 0) printf "%.2fx", p / b; else print "-"}') |"
    done
  } | tee "$out/instructions.md"
  ((failures == 0)) || exit 1
  exit 0
fi

# --- 1. throughput, audit log on (default level) ------------------------------------------

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_server default
for name in health grant_read grant_write_put grant_write_put_type_length assume_scoped; do check_frame "$name"; done
# One call through reflection with buf curl: the service answers a client that has no .proto.
answer=$("$buf" curl --protocol grpc --http2-prior-knowledge -H "$as_dev" \
  -d "{\"bucket\": \"$bucket\", \"key\": \"public/hello.txt\"}" \
  "$(grpc_url storagegrants.v1.GrantService/GrantRead)" 2>&1) || true
if "$python" -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["url"].startswith("http") and d["method"] == "GET"' "$answer" 2>/dev/null; then
  log "buf curl GrantRead through reflection: a GET URL"
else
  fail "buf curl GrantRead through reflection did not return a GET URL"
fi
# The presigned URL from that call really downloads from the store.
url=$("$python" -c 'import json,sys; print(json.loads(sys.argv[1]).get("url",""))' "$answer" 2>/dev/null || true)
if [[ -n $url ]] && [[ $(curl -sS --max-time 10 "$url" 2>/dev/null) == "hello from storage-grants" ]]; then
  log "the granted URL downloads the object from s3s-fs"
else
  fail "the URL GrantRead granted did not download the object"
fi

# Warm: the scope's credentials are fetched from moto once, then every call is a hit.
check_frame assume_scoped

# --- --serve: the same setup, driven by someone else's load ---------------------------------

if ((serve)); then
  ((failures == 0)) || { log "the setup's checks failed (above); not serving"; exit 1; }
  rm -rf "$out/frames"
  cp -r "$frames" "$out/frames"
  (umask 077 && printf '%s' "$jwt" >"$out/frames/caller.jwt")
  n=$((CONNECTIONS * STREAMS * 3000))
  # A command line that can be pasted into a shell: words quoted only where they must be.
  shell_words() {
    local word sep=""
    for word; do
      if [[ $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s%s' "$sep" "$word"; else printf "%s'%s'" "$sep" "${word//\'/\'\\\'\'}"; fi
      sep=" "
    done
  }
  {
    echo "# storage-grants, set up as scripts/bench.sh runs it; serving until interrupted."
    echo "# gRPC (h2c) 127.0.0.1:$grpc_port; HTTP gateway 127.0.0.1:$http_port; metrics http://127.0.0.1:$metrics_port/metrics"
    echo "# Callers: the dev token below (dev:bench), an ES256 JWT ($jwt_caller) and a mesh caller's XFCC header ($xfcc_caller); per-caller limits lifted."
    echo "# h2load counts HTTP statuses only: a gRPC error is an HTTP 200 whose grpc-status trailer is not 0."
    echo "# Count the service's answers by code with:"
    echo "curl -s http://127.0.0.1:$metrics_port/metrics | grep '^storage_grants_rpc_duration_seconds_count' | grep -v ' 0\$'"
    echo
    for row in "health check (baseline):health" "GrantRead:grant_read" "GrantWrite PUT, all pins:grant_write_put" \
      "GrantWrite PUT, type and length pinned:grant_write_put_type_length" "AssumeScoped, cache hit:assume_scoped"; do
      name=${row##*:}
      echo "# ${row%:*}"
      shell_words h2load -t 1 -c "$CONNECTIONS" -m "$STREAMS" -n "$n" "${grpc_headers[@]}" \
        -H "$as_dev" -d "$out/frames/$name.bin" "$(grpc_url "${path_of[$name]}")"
      echo
    done
    echo "# GrantRead as the JWT caller (the token is in a file, not on this screen)"
    shell_words h2load -t 1 -c "$CONNECTIONS" -m "$STREAMS" -n "$n" "${grpc_headers[@]}"
    printf ' -H "authorization: Bearer $(cat %s)" ' "$(shell_words "$out/frames/caller.jwt")"
    shell_words -d "$out/frames/grant_read.bin" "$(grpc_url "${path_of[grant_read]}")"
    echo
    echo "# GrantRead as the mesh caller (its sidecar's x-forwarded-client-cert header)"
    shell_words h2load -t 1 -c "$CONNECTIONS" -m "$STREAMS" -n "$n" "${grpc_headers[@]}" \
      -H "$as_mesh" -d "$out/frames/grant_read.bin" "$(grpc_url "${path_of[grant_read]}")"
    echo
    for row in "gateway GET /healthz (baseline):/healthz" "gateway click-time link (302):/v1/objects/$bucket/public/hello.txt"; do
      echo "# ${row%%:*}"
      shell_words h2load --h1 -t 1 -c $((CONNECTIONS * STREAMS)) -n "$n" -H "$as_dev" \
        "http://127.0.0.1:$http_port${row#*:}"
      echo
    done
  } | tee "$out/serve.txt"
  log "serving (pid $server_pid) until interrupted; the commands above are in $out/serve.txt"
  echo serve >"$work/phase"
  if wait "$server_pid"; then rc=0; else rc=$?; fi
  server_pid=""
  log "storage-grants stopped by itself (exit $rc)"
  log_tail "$server_log"
  exit 1
fi
# Rounds. In each, the baseline runs before every call and once more at the end, and a
# call's ratio is taken against the mean of the two baseline runs around it
# (report.py): a machine whose speed drifts (other work on it) moves both alike.
grpc_base() { grpc_run "$1" grpc "health check (baseline)" health; }
http_base() { http_run "$1" "gateway GET /healthz (baseline)" /healthz 2xx; }
for ((round = 1; round <= rounds; round++)); do
  grpc_base "$round"
  grpc_run "$round" grpc "GrantRead, audit log on" grant_read
  grpc_base "$round"
  grpc_run "$round" grpc "GrantRead, JWT caller (ES256)" grant_read "$as_jwt"
  grpc_base "$round"
  grpc_run "$round" grpc "GrantRead, mesh caller (XFCC)" grant_read "$as_mesh"
  grpc_base "$round"
  grpc_run "$round" grpc "GrantWrite PUT, all pins" grant_write_put
  grpc_base "$round"
  grpc_run "$round" grpc "GrantWrite PUT, type and length pinned" grant_write_put_type_length
  grpc_base "$round"
  grpc_run "$round" grpc "AssumeScoped, cache hit" assume_scoped
  grpc_base "$round"
  http_base "$round"
  http_run "$round" "gateway click-time link (302)" "/v1/objects/$bucket/public/hello.txt" 3xx
  http_base "$round"
done

# --- 2. latency at half the maximum rate -----------------------------------------------------

max_read=$(awk -F'|' '$3 == "GrantRead, audit log on" {print $4}' "$work/rows" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
per_client=$(((max_read / 2 + CONNECTIONS - 1) / CONNECTIONS))
((per_client > 0)) || per_client=1
half_rate=$((per_client * CONNECTIONS))
echo "default/latency" >"$work/phase"
# latency_run PREFIX FRAME H2LOAD-ARGS...: one run of FRAME on CONNECTIONS connections with
# h2load's per-request log; sets PREFIX_p50, PREFIX_p99, PREFIX_achieved_rps etc.
latency_run() {
  local prefix=$1 frame=$2
  shift 2
  rm -f "$work/latency.log"
  : >"$server_log"
  "${load[@]}" -t 1 -c "$CONNECTIONS" -D "$duration" --warm-up-time "$warmup" "$@" \
    --log-file "$work/latency.log" \
    "${grpc_headers[@]}" -H "$as_dev" \
    -d "$frames/$frame.bin" "$(grpc_url "${path_of[$frame]}")" >"$logs/h2load-latency-$prefix-$frame.txt" 2>&1 || true
  eval "$("$python" "$root/benches/load/report.py" latency "$work/latency.log" | tr ' ' '\n' | sed "s/^/${prefix}_/")"
  eval "$("$python" "$root/benches/load/report.py" h2load "$logs/h2load-latency-$prefix-$frame.txt" | sed 's/^/lat_/')"
  if ((lat_failed + lat_errored + lat_timeout > 0 || lat_succeeded == 0)); then
    fail "latency run ($prefix) of $frame: $lat_succeeded succeeded, $lat_failed failed, $lat_errored errored"
  fi
}
# a. Steady load: each stream sends its next call when the last is answered, on the
#    fewest streams per connection whose rate reaches half the maximum (probed upward
#    from one). The rate is then steady and the latency is what every caller sees at
#    that load (the achieved rate is reported; it is at least half the maximum).
steady_streams=0
for ((m = 1; m <= STREAMS; m++)); do
  latency_run s grant_read -m "$m"
  log "GrantRead, $CONNECTIONS connections x $m streams: $s_achieved_rps calls/s, p99 ${s_p99} µs"
  if ((s_achieved_rps >= half_rate)); then
    steady_streams=$m
    break
  fi
done
if ((steady_streams == 0)); then
  steady_streams=$STREAMS
  log "GrantRead never reached $half_rate calls/s below $STREAMS streams per connection"
fi
log "GrantRead steady at $s_achieved_rps calls/s (half the maximum: $half_rate): p50 ${s_p50} µs, p99 ${s_p99} µs"
# The health check on the same connections and streams: the floor under any call.
latency_run sh health -m "$steady_streams"
log "health check on the same streams: $sh_achieved_rps calls/s, p50 ${sh_p50} µs, p99 ${sh_p99} µs"
# b. h2load --rps at half the maximum, for comparison. h2load releases a connection's
#    paced requests from a timer that fires at most every 10 ms (its rps_watcher repeats
#    at max(0.01 s, 1/rps)), so at thousands of calls/s per connection each tick releases
#    tens of calls at once, STREAMS at a time: bursts at full concurrency, then idle.
#    Its p99 is the bursts' queueing, mostly the load tool's; the health check paced
#    alike shows how much.
latency_run l grant_read -m "$STREAMS" --rps "$per_client"
log "GrantRead, h2load --rps $per_client per connection: p50 ${l_p50} µs, p99 ${l_p99} µs (achieved $l_achieved_rps calls/s)"
latency_run hl health -m "$STREAMS" --rps "$per_client"
log "health check, h2load --rps alike: p50 ${hl_p50} µs, p99 ${hl_p99} µs"
peak_default=$(peak_kib default/)

if ((perf)); then
  if command -v perf >/dev/null; then
    echo "default/perf" >"$work/phase"
    : >"$server_log"
    log "perf record -g on GrantRead for ${duration}s"
    perf record -g -o "$out/perf.data" -p "$server_pid" -- sleep "$((duration + warmup))" >"$logs/perf-record.txt" 2>&1 &
    perf_pid=$!
    "${load[@]}" -t 1 -c "$CONNECTIONS" -m "$STREAMS" -D "$duration" --warm-up-time "$warmup" \
      "${grpc_headers[@]}" -H "$as_dev" \
      -d "$frames/grant_read.bin" "$(grpc_url "${path_of[grant_read]}")" >"$logs/h2load-perf.txt" 2>&1 || true
    wait "$perf_pid" || true
    # Self time by symbol (perf pads its columns to the longest Rust symbol: trimmed),
    # the same grouped by component, and time including callees.
    perf report -i "$out/perf.data" --no-children --stdio --sort dso,symbol -g none 2>/dev/null |
      grep -v '^#' | grep -v '^$' | sed -E 's/[ -]+$//' >"$out/perf-report.txt" || true
    "$python" "$root/benches/load/report.py" perfgroups "$out/perf-report.txt" >"$out/perf-groups.md" || true
    perf report -i "$out/perf.data" --children --percent-limit 1 --stdio --sort symbol -g none 2>/dev/null |
      grep -v '^#' | grep -v '^$' | sed -E 's/[ -]+$//' | cut -c1-220 >"$out/perf-report-children.txt" || true
    log "perf reports in $out/perf-report.txt, perf-groups.md, perf-report-children.txt"
  else
    log "perf is not installed (Debian linux-perf); skipping --perf"
  fi
fi

# --- 1b. the same with RUST_LOG=warn (no audit lines, no info logs) --------------------------

start_server warn RUST_LOG=warn
warn_base() { grpc_run "$1" warn "health check (baseline), RUST_LOG=warn" health; }
for ((round = 1; round <= rounds; round++)); do
  warn_base "$round"
  grpc_run "$round" warn "GrantRead, RUST_LOG=warn" grant_read
  warn_base "$round"
done
peak_warn=$(peak_kib warn/)

# --- 3. soak: SCOPES distinct AssumeScoped scopes through the STS cache -------------------------

start_server soak
echo soak/fill >"$work/phase"
fill_started=$SECONDS
# One connection, 64 streams: every scope once, in order (h2load gives each client the
# URI list from its start, so more clients would repeat the first scopes).
"${load[@]}" -t 1 -c 1 -m $((CONNECTIONS * STREAMS)) -n "$scopes" -i "$work/soak-uris.txt" \
  -H "$as_dev" >"$logs/h2load-soak-fill.txt" 2>&1 || true
fill_seconds=$((SECONDS - fill_started))
eval "$("$python" "$root/benches/load/report.py" h2load "$logs/h2load-soak-fill.txt" | sed 's/^/fill_/')"
if ((fill_s2xx != scopes)); then
  fail "soak fill: $fill_s2xx of $scopes scopes answered 2xx (see $logs/h2load-soak-fill.txt)"
fi
log "soak fill: $fill_s2xx of $scopes scopes fetched from moto in ${fill_seconds}s"
# The maximum rate of this mix (all hits now), to take half of it.
echo soak/max >"$work/phase"
"${load[@]}" -t 1 -c "$CONNECTIONS" -m "$STREAMS" -D "$duration" --warm-up-time "$warmup" -i "$work/soak-uris.txt" \
  -H "$as_dev" >"$logs/h2load-soak-max.txt" 2>&1 || true
eval "$("$python" "$root/benches/load/report.py" h2load "$logs/h2load-soak-max.txt" | sed 's/^/smax_/')"
soak_per_client=$(((smax_rps / 2 + CONNECTIONS - 1) / CONNECTIONS))
((soak_per_client > 0)) || soak_per_client=1
echo soak/soak >"$work/phase"
: >"$server_log"
log "soak: ${soak}s at $((soak_per_client * CONNECTIONS)) requests/s (half of $smax_rps) over $scopes scopes"
"${load[@]}" -t 1 -c "$CONNECTIONS" -m "$STREAMS" -D "$soak" --rps "$soak_per_client" -i "$work/soak-uris.txt" \
  -H "$as_dev" >"$logs/h2load-soak.txt" 2>&1 || true
echo soak/done >"$work/phase"
eval "$("$python" "$root/benches/load/report.py" h2load "$logs/h2load-soak.txt" | sed 's/^/soak_/')"
if ((soak_failed + soak_errored + soak_timeout + soak_s3xx + soak_s4xx + soak_s5xx > 0 || soak_succeeded == 0)); then
  fail "soak: $soak_succeeded succeeded, $soak_failed failed, $soak_errored errored, 3xx/4xx/5xx $soak_s3xx/$soak_s4xx/$soak_s5xx"
fi
curl -sS --max-time 5 "http://127.0.0.1:$metrics_port/metrics" >"$logs/metrics-soak.txt" 2>/dev/null || true
sts_misses=$(awk '/^storage_grants_sts_assume_role_total/ {s += $NF} END {print s + 0}' "$logs/metrics-soak.txt")
rm -f "$work/sampling"
stop_process "$sampler_pid" 3
sampler_pid=""
# The soak's server writes an audit line per call, about 8 GB in 300 s at 70,000 calls
# a second. They stay on disk until the soak is over: cutting the file while the server
# writes to it held its writes back for a moment each time, and the audit lines it
# buffered meanwhile showed as steps of up to 8 MiB in the memory the soak measures
# (a 17.9 % spread, against 1.4 % without the cuts). Now that the server is idle, its
# log keeps the service's own lines; the server appends, so it goes on at the new end.
soak_log=$logs/server-soak.log
if [[ -f $soak_log ]]; then
  soak_log_bytes=$(stat -c %s "$soak_log")
  grep -v -F '"target":"audit"' "$soak_log" >"$work/soak-kept.log" || true
  cat "$work/soak-kept.log" >"$soak_log"
  log "soak: its server's $((soak_log_bytes >> 20)) MiB of log cut to the service's own lines (audit lines removed)"
fi
eval "$("$python" "$root/benches/load/report.py" soak "$rss_csv" soak/fill soak/soak | tr ' ' '\n' | sed 's/^/rss_/')"
peak_soak=$(peak_kib soak/)

# The plot: RSS over the soak server's life (fill, max-rate probe, soak).
# Times from the soak server's first sample.
awk -F, 'NR == 1 {print; next} $3 ~ /^soak\// {if (t0 == "") t0 = $1; printf "%.1f,%s,%s\n", $1 - t0, $2, $3}' \
  "$rss_csv" >"$out/soak-rss.csv"
"$gnuplot" <<EOF 2>"$logs/gnuplot.log" || log "gnuplot failed (see $logs/gnuplot.log)"
set terminal pngcairo size 1000,500 font ",10"
set output "$out/soak.png"
set datafile separator ","
set title "storage-grants VmRSS: $scopes AssumeScoped scopes (cache fill, max-rate probe, ${soak}s soak at $((soak_per_client * CONNECTIONS)) req/s)"
set xlabel "seconds since the soak server started"
set ylabel "VmRSS (MiB)"
set yrange [0:72]
set grid
set key bottom right
set arrow from graph 0, first 64 to graph 1, first 64 nohead dashtype 2 linecolor rgb "red"
set label "64 MiB target" at graph 0.01, first 66 textcolor rgb "red"
plot "$out/soak-rss.csv" using 1:(stringcolumn(3) eq "soak/fill" ? \$2/1024 : 1/0) with linespoints pt 7 ps 0.4 title "cache fill", \
     "" using 1:(stringcolumn(3) eq "soak/max" ? \$2/1024 : 1/0) with linespoints pt 7 ps 0.4 title "max-rate probe", \
     "" using 1:(stringcolumn(3) eq "soak/soak" ? \$2/1024 : 1/0) with linespoints pt 7 ps 0.4 title "soak at half load"
EOF

# --- 4. tables ---------------------------------------------------------------------------------

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "n/a"}'; }
{
  echo "## storage-grants load benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) CPUs; $(uname -sr); load average at the start $load_before, at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "h2load $("$h2load" --version | awk '{print $NF}'), one thread$( ((pin)) && echo ", on CPU 1 (the service on CPU 0: --pin)"), $CONNECTIONS connections × $STREAMS streams (gateway: --h1, $((CONNECTIONS * STREAMS)) connections × 1); each run: ${warmup}s warm-up, then a fixed count of about ${duration}s of requests; $rounds rounds; release binary; everything on 127.0.0.1."
  echo
  echo "### Throughput (gRPC, h2c)"
  echo
  "$python" "$root/benches/load/report.py" table "$work/rows"
  echo
  echo "### Latency at half GrantRead's maximum rate ($half_rate calls/s)"
  echo
  echo "Steady: $CONNECTIONS connections × $steady_streams streams, each stream sending its next call when the last is answered (the fewest streams whose rate reaches half the maximum). Burst-paced: h2load --rps $per_client per connection, which releases each connection's calls every 10 ms, $STREAMS at a time."
  echo
  echo "| load | call | achieved | p50 | p90 | p99 | max | requests |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  echo "| steady | GrantRead | $s_achieved_rps/s | ${s_p50} µs | ${s_p90} µs | ${s_p99} µs | ${s_max} µs | $s_n |"
  echo "| steady, same streams | health check (floor) | $sh_achieved_rps/s | ${sh_p50} µs | ${sh_p90} µs | ${sh_p99} µs | ${sh_max} µs | $sh_n |"
  echo "| burst-paced (--rps) | GrantRead | $l_achieved_rps/s | ${l_p50} µs | ${l_p90} µs | ${l_p99} µs | ${l_max} µs | $l_n |"
  echo "| burst-paced (--rps) | health check (floor) | $hl_achieved_rps/s | ${hl_p50} µs | ${hl_p90} µs | ${hl_p99} µs | ${hl_max} µs | $hl_n |"
  echo
  echo "### Memory (VmRSS)"
  echo
  echo "| server | peak |"
  echo "|---|---:|"
  echo "| throughput + latency runs (audit log on) | $(mib "$peak_default") MiB |"
  echo "| RUST_LOG=warn runs | $(mib "$peak_warn") MiB |"
  echo "| soak server (fill, probe, soak) | $(mib "$peak_soak") MiB |"
  echo
  echo "Soak: $scopes distinct AssumeScoped scopes (gateway container-credentials endpoint, same pipeline and STS cache)."
  echo "Cache fill: $fill_s2xx scopes in ${fill_seconds}s ($sts_misses AssumeRole calls to moto in the server's metrics); max rate over the filled cache $smax_rps req/s;"
  echo "soak ${soak}s at $((soak_per_client * CONNECTIONS)) req/s target ($soak_rps achieved, $soak_succeeded requests, $soak_failed failed)."
  echo
  echo "| RSS after fill | soak start | soak end | soak min | soak max | spread (max-min)/min | samples |"
  echo "|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $([[ $rss_fill_end == none ]] && echo "no sample (the fill took under 1 s)" || echo "$rss_fill_end MiB") | $rss_start MiB | $rss_end MiB | $rss_min MiB | $rss_max MiB | $rss_spread_pct % | $rss_samples |"
  echo
  echo "Plot: soak.png; samples: rss.csv (every run) and soak-rss.csv."
  if ((failures > 0)); then
    echo
    echo "**$failures check(s) FAILED**: see the log above and $logs."
  fi
} | tee "$out/results.md"
log "results in $out/results.md, plot $out/soak.png"
((failures == 0)) || exit 1
