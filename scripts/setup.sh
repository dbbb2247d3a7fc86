#!/usr/bin/env bash
# Set up a development environment: the Fashion-MNIST Debian package (where apt exists),
# a virtualenv in .venv and stratafl installed into it in editable mode.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
    || echo "note: could not install dataset-fashion-mnist; the loader will use its cache or download" >&2
fi

# The dev extras include the dashboard's browser test: Debian's chromium and its driver.
case ",$extras," in
  *,dev,*)
    if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } \
      && command -v apt-get >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
      apt=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
      "${apt[@]}" >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && "${apt[@]}" >/dev/null; } \
        || echo "note: could not install chromium chromium-driver; the browser tests will skip (CI fails them)" >&2
    fi
    # The deployment tests (tests/deploy, tests/unit/test_systemd_units.py) build images and
    # run federations with podman, render the manifests with kubectl and check the units.
    if { ! command -v podman >/dev/null 2>&1 || ! command -v kubectl >/dev/null 2>&1 \
      || ! command -v systemd-analyze >/dev/null 2>&1; } && command -v apt-get >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
      apt=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman mmdebstrap runc uidmap kubernetes-client systemd)
      "${apt[@]}" >/dev/null 2>&1 \
        || { $SUDO apt-get update -q >/dev/null && "${apt[@]}" >/dev/null; } \
        || echo "note: could not install podman, kubectl or systemd; the deployment tests will skip (CI fails them)" >&2
    fi
    ;;
esac

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
