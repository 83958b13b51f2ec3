#!/usr/bin/env bash
# Runs the daemon with working defaults (embedded SQLite under ./data, 127.0.0.1:8080).
# Extra arguments are passed to wa-supervisor (see --help); environment variables work too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked
exec ./target/release/wa-supervisor "$@"
