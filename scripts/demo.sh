#!/usr/bin/env bash
# One command: set up, then run the Fashion-MNIST demo federation on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/strata demo "$@"
