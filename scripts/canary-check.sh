#!/usr/bin/env bash
# The test run's final secret check: the integration tests give every secret they
# hand the service (the store's secret key, the dev tokens) this run's canary, and
# leave what the service wrote in DIR: the in-process service's logs, the binary's log
# and audit file, every span the OTLP receiver got, every metrics scrape. None may
# contain the canary. (The OTLP test also checks the secrets it cannot derive from
# the canary itself: STS-issued keys and session tokens, URL signatures.)
#
# Usage: scripts/canary-check.sh DIR CANARY
# Exit code: 0 when DIR holds each kind of output and none contains CANARY; 1 otherwise.
set -euo pipefail

dir=$1 canary=$2
log() { echo "canary-check: $*" >&2; }

[[ ${#canary} -ge 16 ]] || { log "canary '$canary' is too short to be meaningful"; exit 1; }
# An empty scan proves nothing: each kind of output must be there.
for kind in log otlp-spans binary-log audit scrape; do
  count=$(find "$dir" -maxdepth 1 -type f -name "$kind-*" | wc -l)
  if ((count == 0)); then
    log "no $kind-* file in $dir: the tests that write it did not run"
    exit 1
  fi
  log "$kind: $count file(s)"
done
if leaks=$(grep -rlF -- "$canary" "$dir"); then
  # File names only: the matching lines hold the secret.
  log "this run's secrets reached: $leaks"
  exit 1
fi
log "no secret of this run in $(find "$dir" -type f | wc -l) files ($(du -sh "$dir" | cut -f1))"
