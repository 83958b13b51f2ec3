#!/usr/bin/env bash
# Generates the API types from a wa-supervisor API description with the pinned openapi-typescript
# (node_modules, installed by `npm ci`; nothing is downloaded here).
# Usage: generate.sh <openapi.json file or URL> [output, default src/api.d.ts]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec=${1:?usage: generate.sh <openapi.json file or URL> [output .d.ts]}
out=${2:-$here/src/api.d.ts}
generator=$here/node_modules/.bin/openapi-typescript
if [ ! -x "$generator" ]; then
  echo "generate.sh: $generator is missing; run scripts/test.sh (or npm ci in $here)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The generator's banner goes to the log only when it fails.
if ! "$generator" "$spec" --output "$work/api.d.ts" >"$work/log" 2>&1; then
  cat "$work/log" >&2
  exit 1
fi
mv "$work/api.d.ts" "$out"
