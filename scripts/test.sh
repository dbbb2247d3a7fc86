#!/usr/bin/env bash
# One command: set up with the dev and torch extras, run the static checks and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,torch
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/lint-imports
# mypy checks beside the tests: it needs one core for half a minute, and the tests leave
# some idle; its verdict still decides, after theirs.
mypy_log=$(mktemp)
.venv/bin/mypy src >"$mypy_log" 2>&1 &
mypy_pid=$!
# One worker per core; --dist loadgroup keeps each xdist_group (tests/support/marks.py: the
# tests that load or measure the machine) on one worker, one test at a time.
# Serial instead: scripts/test.sh -n 0
status=0
.venv/bin/python -m pytest --numprocesses=auto --dist=loadgroup "$@" || status=$?
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"
rm -f "$mypy_log"
[ "$mypy_status" -eq 0 ] || exit "$mypy_status"
exit "$status"
