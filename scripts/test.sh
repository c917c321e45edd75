#!/usr/bin/env bash
# The README's test command: set-up (idempotent) then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ -d ../shared ]; then export ICH_SHARED_CACHE=${ICH_SHARED_CACHE:-$HOME/.cache/ichanalyzer-shared}; ../shared/tools/unpack-data >/dev/null; fi
python -m pytest -q "$@"
