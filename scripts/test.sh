#!/usr/bin/env bash
# One command: set up with the dev extras, check the import rules, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
