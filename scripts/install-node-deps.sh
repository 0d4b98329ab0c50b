#!/bin/sh
# Install node-opcua-client (pinned in tests/opcua_node/package.json) for the OPC UA
# cross-stack test, only when it is missing. Quiet on success; exit 1 when npm is absent.
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$here/tests/opcua_node"
want="$(sed -n 's/.*"node-opcua-client": *"\([^"]*\)".*/\1/p' "$dir/package.json")"
have="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
    "$dir/node_modules/node-opcua-client/package.json" 2>/dev/null | head -n 1 || true)"
[ -n "$want" ] && [ "$have" = "$want" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
    echo "install-node-deps: npm not found (Debian: apt-get install -y nodejs npm)" >&2
    exit 1
fi
# No lock file: the pinned node-opcua packages pin each other exactly.
cd "$dir"
npm install --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null
