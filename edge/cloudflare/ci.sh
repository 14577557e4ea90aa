#!/usr/bin/env bash
# The Cloudflare Worker shim's CI step, called by .ci/run:
#   bash edge/cloudflare/ci.sh          install the pinned npm packages, run the node tests
#   bash edge/cloudflare/ci.sh install  install only (tests/test_shim.py then runs the Worker too)
# `npm ci` installs exactly package-lock.json; install scripts are not run (workerd and esbuild
# ship their binaries as packages, nothing needs building).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "edge/cloudflare/ci.sh: node and npm are required (Debian: apt-get install nodejs npm)" >&2
    exit 2
fi
started=$SECONDS
if [ ! -d node_modules/miniflare ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
echo "edge/cloudflare: npm packages ready [$((SECONDS - started))s]"
if [ "${1:-}" = "install" ]; then
    exit 0
fi
node --test test/
echo "edge/cloudflare: node tests done [$((SECONDS - started))s]"
