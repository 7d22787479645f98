#!/usr/bin/env bash
# The Python client's tests now run with the Node client's and the contract check in
# scripts/clients-test.sh, against one server setup; this name runs that script.
#
# Usage: scripts/python-client-test.sh [SERVER_BINARY]
exec "$(dirname "${BASH_SOURCE[0]}")/clients-test.sh" "$@"
