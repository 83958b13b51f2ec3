#!/usr/bin/env bash
# Installs the pinned WA-JS (wa-js.pin) where the daemon loads it by default:
#   <dest>/wppconnect-wa.js and its type definitions <dest>/dist/**/*.d.ts (the tests check the
#   bridge against them). <dest> defaults to ./data/wa-js (WA_JS_PATH's default folder).
# Fetches exactly the pinned package with `npm pack`, checks its sha512 integrity and the file's
# sha256, and does nothing when the installed file already matches. Needs npm (Debian: npm).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-data/wa-js}
# shellcheck source=../wa-js.pin
source wa-js.pin

file=$dest/wppconnect-wa.js
if [ -f "$file" ] && [ -d "$dest/dist" ] &&
  [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$WA_JS_SHA256" ]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "fetch-wa-js: npm is needed (apt-get install npm)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetching @wppconnect/wa-js@$WA_JS_VERSION ..."
(cd "$work" && npm pack --silent "@wppconnect/wa-js@$WA_JS_VERSION" >/dev/null)
tarball=$(ls "$work"/*.tgz)
integrity="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$integrity" != "$WA_JS_INTEGRITY" ]; then
  echo "fetch-wa-js: integrity mismatch for @wppconnect/wa-js@$WA_JS_VERSION" >&2
  echo "  expected $WA_JS_INTEGRITY" >&2
  echo "  got      $integrity" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work" package/dist
got=$(sha256sum "$work/package/dist/wppconnect-wa.js" | cut -d' ' -f1)
if [ "$got" != "$WA_JS_SHA256" ]; then
  echo "fetch-wa-js: wppconnect-wa.js has sha256 $got, wa-js.pin says $WA_JS_SHA256" >&2
  exit 1
fi
mkdir -p "$dest"
rm -rf "$dest/dist"
(cd "$work/package" && find dist -name '*.d.ts' -print0 | tar --null -cf - -T -) | tar -xf - -C "$dest"
install -m 0644 "$work/package/dist/wppconnect-wa.js" "$file"
echo "WA-JS $WA_JS_VERSION installed at $file (sha256 $WA_JS_SHA256)"
