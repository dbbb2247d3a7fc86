#!/usr/bin/env bash
# Install Flower 1.42.0 in its own virtualenv, beside stratafl's and never inside it:
# the side-by-side benchmark runs Flower's processes from this venv, so stratafl never
# depends on (or imports) flwr. Usage: benchmarks/peers/setup_flower.sh [python]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-flower"
python="${1:-python3.11}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "flwr==1.42.0" numpy
"$venv/bin/flwr" --version
echo "Flower is ready in $venv"
