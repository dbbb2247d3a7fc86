"""The systemd units of deploy/systemd: systemd accepts them as they are, and none lost its
hardening.

`systemd-analyze verify` parses a unit the way systemd would load it and names every
unknown key, bad value or missing executable (its exit code stays 0 for an unknown key, so
its whole output must be empty). The units run `/opt/stratafl/bin/strata`, which this
machine does not have: each is verified as a copy that runs this checkout's `strata`.
`systemd-analyze security --offline=yes` scores a unit file's exposure without a running
systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPOSITORY

UNITS = REPOSITORY / "deploy" / "systemd"
INSTALLED_STRATA = "/opt/stratafl/bin/strata"
NAMES = ("strata-controller.service", "strata-combiner@.service", "strata-client@.service")

HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ReadOnlyPaths": "/etc/stratafl",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service",
    "Restart": "on-failure",
    "User": "stratafl",
}
"""Keys every unit must set, with their values (a key may be set more than once)."""

MAX_EXPOSURE = 2.0
"""`systemd-analyze security` scores 0 (locked down) to 10; the units score 1.2 on
systemd 252. Above 2, a hardening line was lost."""


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd): units not checked")
    return found


def _service_keys(text: str) -> dict[str, list[str]]:
    """The [Service] section's keys and their values, in order."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def _runnable_copy(name: str, folder: Path) -> Path:
    """The unit as installed, but running this checkout's `strata` (a template gets an
    instance name, as systemd needs one to load it)."""
    strata = Path(sys.executable).with_name("strata")
    assert strata.exists(), f"{strata} is missing: install the package (pip install -e .)"
    text = (UNITS / name).read_text()
    assert INSTALLED_STRATA in text, f"{name} must run {INSTALLED_STRATA}"
    copy = folder / name.replace("@.", "@site-1.")
    copy.write_text(text.replace(INSTALLED_STRATA, str(strata)))
    return copy


@pytest.mark.parametrize("name", NAMES)
def test_each_unit_keeps_its_hardening_and_an_environment_file(name: str):
    keys = _service_keys((UNITS / name).read_text())
    for key, value in HARDENING.items():
        assert value in keys.get(key, []), f"{name}: {key}={value} is missing"
    assert keys.get("StateDirectory"), f"{name}: no StateDirectory="
    assert keys.get("EnvironmentFile"), f"{name}: no EnvironmentFile="
    assert all("$STRATA_ARGS" in start for start in keys["ExecStart"])


@pytest.mark.parametrize("name", NAMES)
def test_systemd_loads_each_unit_without_a_word(name: str, tmp_path: Path):
    analyze = _analyze()
    unit = _runnable_copy(name, tmp_path)
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_each_unit_is_exposed_little_by_systemds_own_score(name: str, tmp_path: Path):
    analyze = _analyze()
    unit = _runnable_copy(name, tmp_path)
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert score is not None, done.stdout + done.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE, done.stdout
