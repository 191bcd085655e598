#!/usr/bin/env bash
# Create .venv and install reelstream with its dev extra (idempotent; safe to rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned (2.13.0, CPU build); see pyproject.toml.
.venv/bin/python -m pip install --quiet -e '.[dev]'
# Headless Chromium and its driver for the dashboard's browser test (tests/test_dashboard_browser.py).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: /usr/bin/chromium missing; as root run: apt-get install -y chromium chromium-driver" >&2
  fi
fi
