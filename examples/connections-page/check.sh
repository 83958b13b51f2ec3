#!/usr/bin/env bash
# Checks this example against a daemon's API description: src/api.d.ts must be exactly what
# generate.sh makes of it, and the page must type-check against those types (tsc --noEmit).
# Usage: check.sh <openapi.json file or URL>
# Offline: uses the packages scripts/test.sh installed with `npm ci`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec=${1:?usage: check.sh <openapi.json file or URL>}
case $spec in
  http://* | https://* | /*) ;;
  *) spec=$PWD/$spec ;;
esac
cd "$here"
if [ ! -x node_modules/.bin/tsc ]; then
  echo "check.sh: node_modules/.bin/tsc is missing; run scripts/test.sh (or npm ci in $here)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash generate.sh "$spec" "$work/api.d.ts"
if ! diff -u src/api.d.ts "$work/api.d.ts"; then
  echo "check.sh: src/api.d.ts differs from the API (diff above); regenerate and commit it:" >&2
  echo "  bash examples/connections-page/generate.sh <openapi.json file or URL>" >&2
  exit 1
fi
node_modules/.bin/tsc --noEmit -p .
echo "check.sh: src/api.d.ts matches the API and the page type-checks"
