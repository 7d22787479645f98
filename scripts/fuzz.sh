#!/usr/bin/env bash
# Coverage-guided fuzzing of everything that reads untrusted or operator-written input
# (the targets in fuzz/, entry points in src/fuzzing/): one target, or each in turn,
# for SECONDS each, one at a time on one core.
#
# Usage: scripts/fuzz.sh [TARGET|all] [SECONDS]     (default: all, 600)
#        scripts/fuzz.sh TARGET FILE                replays one input (a crash)
#
# cargo-fuzz passes sanitizer flags that only a nightly compiler accepts; the stable
# toolchain is told to accept them (RUSTC_BOOTSTRAP=1), so no nightly is needed.
# Seeds are fuzz/corpus/TARGET (committed, only read); what a run adds goes to
# fuzz/work/TARGET, crashes to fuzz/artifacts/TARGET, and each run's final libFuzzer
# statistics to fuzz/work/stats.txt (all ignored by git). A crash is a bug: fix it,
# add its input to the seeds, replay it. Honours CARGO_TARGET_DIR; FUZZ_ARGS adds
# libFuzzer options.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/tools.sh

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(scope presign post_policy session_policy rules jwt jwks xfcc request)

# Installs cargo-fuzz at its pinned version into its own root and echoes the binary.
ensure_cargo_fuzz() {
  local root bin
  root="$(tools_dir)/cargo-fuzz-${CARGO_FUZZ_VERSION}"
  bin="$root/bin/cargo-fuzz"
  if [[ ! -x $bin ]]; then
    tools_note "installing cargo-fuzz ${CARGO_FUZZ_VERSION} into $root (about a minute)"
    mkdir -p "$root"
    (cd "$root" && cargo install "cargo-fuzz@${CARGO_FUZZ_VERSION}" --locked --root "$root") >&2 ||
      tools_die "cargo install cargo-fuzz@${CARGO_FUZZ_VERSION} failed" || return
  fi
  echo "$bin"
}

target=${1:-all}
seconds=${2:-600}
if [[ $target == all ]]; then
  targets=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $target "* ]]; then
  targets=("$target")
else
  tools_die "unknown target '$target'; one of: all ${TARGETS[*]}"
fi

cargo_fuzz=$(ensure_cargo_fuzz)
export RUSTC_BOOTSTRAP=1
fuzz() { nice -n 19 "$cargo_fuzz" "$@"; }

if [[ -f $seconds ]]; then
  fuzz run "$target" "$seconds"
  exit
fi
[[ $seconds =~ ^[0-9]+$ ]] || tools_die "SECONDS must be a number, or a file to replay"

mkdir -p fuzz/work
failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t"
  log="fuzz/work/$t.log"
  echo "==> $t: ${seconds}s" >&2
  # -jobs/-workers unset: one process, one core. The work directory comes first, so
  # libFuzzer writes new inputs there and only reads the seeds.
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of options
  if ! fuzz run "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 ${FUZZ_ARGS:-} 2>&1 | tee "$log" >&2; then
    failed+=("$t")
  fi
  {
    echo "## $t ($(date -u +%Y-%m-%dT%H:%M:%SZ), ${seconds}s)"
    grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs|stat::|==[0-9]+==ERROR|SUMMARY|.*panicked at)' "$log" || true
    echo "corpus: $(find "fuzz/work/$t" -type f | wc -l) files in fuzz/work/$t"
  } >>fuzz/work/stats.txt
done
((${#failed[@]} == 0)) || tools_die "failed: ${failed[*]}; the inputs are in fuzz/artifacts/"
