#!/usr/bin/env bash
# Every test Ballast has, on a fresh machine: Rust unit and integration tests (the gateway against the
# provider simulator over loopback), then the end-to-end suite that drives the gateway with the
# official Python SDKs (installed into ./.venv from tests/e2e/requirements.txt), then the real coding
# agents (Claude Code and Codex, pinned from npm into tests/agents/.npm) through the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== build"
cargo build --locked --bin ballast

echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== end-to-end tests (official SDKs)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
BALLAST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ballast" .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e

echo "== end-to-end tests (real coding agents: Claude Code, Codex)"
BALLAST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ballast" bash tests/agents/run.sh
