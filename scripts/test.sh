#!/usr/bin/env bash
# One command: set up with the dev and torch extras, run the static checks, then the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,torch
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy src
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
