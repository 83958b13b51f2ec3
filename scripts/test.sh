#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real Chromium, SQLite and
# PostgreSQL at 127.0.0.1:5432). Fails when PostgreSQL is unreachable unless
# WA_TEST_SKIP_POSTGRES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# The examples' npm packages (tests/integration/{openapi,examples}.rs run them), from their lock
# files, only when node_modules is missing or older than the lock; the checks then run offline.
for example in examples/connections-page examples/bot-backend; do
  lock=$example/package-lock.json
  [ -f "$lock" ] || continue
  installed=$example/node_modules/.package-lock.json
  if [ ! -f "$installed" ] || [ "$lock" -nt "$installed" ]; then
    echo "installing the npm packages of $example ..."
    npm ci --no-audit --no-fund --loglevel=error --prefix "$example" >/dev/null
  fi
done

# libfaketime: a cluster test runs one node with its clock moved (tests/integration/several_hosts.rs).
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && [ "$(id -u)" -eq 0 ]; then
  echo "installing faketime ..."
  { apt-get install -y -q --no-install-recommends faketime >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends faketime >/dev/null; }; }
fi

if [ "${WA_TEST_SKIP_POSTGRES:-0}" != 1 ]; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    # This machine kind runs PostgreSQL; bring it back if it stopped.
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
      pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
      for _ in $(seq 1 20); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    fi
  fi
  pg_isready -q -h 127.0.0.1 -p 5432 || {
    echo "PostgreSQL is not reachable at 127.0.0.1:5432; the store tests need it (WA_TEST_SKIP_POSTGRES=1 to skip)" >&2
    exit 1
  }
fi

# The deploy files: systemd-analyze verify, nginx -t (and a live SSE pass through it), compose.
bash scripts/check-deploy.sh

cargo fmt --all -- --check

cargo clippy --locked --all-targets -- -D warnings
# Tests that launch Chromium are bounded by the test thread count (2 cores here).
cargo test --locked -- --test-threads="${WA_TEST_THREADS:-2}"
