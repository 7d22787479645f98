#!/usr/bin/env bash
# Records the API contract as released: writes proto/released/storagegrants-v1.binpb,
# the buf image (a FileDescriptorSet) of proto/ as it is now. scripts/clients-test.sh
# runs `buf breaking` against this file, so every later change to proto/ must stay
# wire- and source-compatible with it (buf's FILE rules, buf.yaml).
#
# Run it when a version is released, and commit the file with the release:
#   scripts/release-contract.sh && git add proto/released && git commit -m 'proto: record the released contract'
#
# It refuses to record a contract that breaks the one recorded before: a breaking
# change is a new package (storagegrants.v2), not a new release of v1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/tools.sh

released=proto/released/storagegrants-v1.binpb
buf=$(ensure_node_tools)

"$buf" lint
if [[ -f $released ]]; then
  "$buf" breaking --against "$released"
fi
# No source info: comments and spans do not matter to compatibility, and leaving them
# out keeps the file small and its diffs to real changes.
"$buf" build --exclude-source-info -o "$released"
echo "release-contract: wrote $released" >&2
