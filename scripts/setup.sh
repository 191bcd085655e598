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
