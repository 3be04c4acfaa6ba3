#!/usr/bin/env bash
# The README's test command: set up the environment if needed, run the suite.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$(bash "$ROOT/tools/setup_env.sh")"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest tests "$@"
