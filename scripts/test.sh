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

echo "== Prometheus rules (deploy/prometheus): promtool check and unit tests"
# Debian's prometheus package brings prometheus and promtool; the e2e suite scrapes Ballast with it.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # The package would start a system prometheus; policy-rc.d 101 tells it not to.
  policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ] && [ -z "$sudo" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q prometheus >/dev/null ||
    { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q prometheus >/dev/null; }
  [ -z "$made_policy" ] || rm -f "$policy"
fi
(cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml)

# Debian's chromium renders the `ballast chaos` chart in tests/e2e/test_chaos_chart.py (headless).
if ! command -v chromium >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null ||
    { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >/dev/null; }
fi

echo "== end-to-end tests (official SDKs)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
BALLAST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ballast" .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e

echo "== end-to-end tests (real coding agents: Claude Code, Codex)"
BALLAST_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/ballast" bash tests/agents/run.sh
