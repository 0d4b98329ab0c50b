#!/bin/sh
# Install the node-opcua packages pinned in tests/opcua_node/package.json (the client of the
# OPC UA cross-stack test, the server of the BMS interop test), only when one is missing or
# at another version. Quiet on success; exit 1 when npm is absent.
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$here/tests/opcua_node"
missing=""
for pkg in node-opcua-client node-opcua-server; do
    want="$(sed -n "s/.*\"$pkg\": *\"\([^\"]*\)\".*/\1/p" "$dir/package.json")"
    have="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' \
        "$dir/node_modules/$pkg/package.json" 2>/dev/null | head -n 1 || true)"
    if [ -z "$want" ] || [ "$have" != "$want" ]; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
    echo "install-node-deps: npm not found (Debian: apt-get install -y nodejs npm);" \
        "missing:$missing" >&2
    exit 1
fi
# No lock file: the pinned node-opcua packages pin each other exactly.
cd "$dir"
npm install --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null
