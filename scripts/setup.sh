#!/usr/bin/env bash
# Installs what the daemon and its tests need on a fresh Debian machine (idempotent).
# Sourced by scripts/run.sh and scripts/test.sh.
set -euo pipefail

need_apt=()
# The browser engines: the shell runs the sessions by default (BROWSER=auto), chromium is the
# switch (BROWSER=chromium) and runs part of the test suite.
[ -x /usr/lib/chromium/chromium-headless-shell ] || need_apt+=(chromium-headless-shell)
command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ] || need_apt+=(chromium)
# ffmpeg transcodes voice notes to Ogg/Opus (docs/messaging.md).
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v pg_isready >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need_apt[*]} (run as root, or: sudo apt-get install -y ${need_apt[*]})" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# The pinned WA-JS, where the daemon loads it by default (checked by hash; see wa-js.pin).
bash scripts/fetch-wa-js.sh
