#!/usr/bin/env bash
# One command: set up with the dev and torch extras, run the static checks, then the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,torch
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy src
.venv/bin/lint-imports
# The images the deployment tests run (tests/deploy): built once here, as set-up, reused
# while their recipe is unchanged (minutes on a fresh machine, seconds after).
if command -v podman >/dev/null 2>&1; then scripts/image.sh; fi
# One worker per core; --dist loadgroup keeps each xdist_group (tests/support/marks.py: the
# tests that load or measure the machine) on one worker, one test at a time.
# Serial instead: scripts/test.sh -n 0
exec .venv/bin/python -m pytest --numprocesses=auto --dist=loadgroup "$@"
