#!/usr/bin/env bash
# The test command (README, CI): install from scratch if needed, lint, run every test.
# The tests start their own Tansu broker and redis-server on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
