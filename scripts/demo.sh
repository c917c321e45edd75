#!/usr/bin/env bash
# The README's main-job command: set-up (idempotent), then the whole pipeline on the built-in phantom.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ichanalyzer demo "$@"
