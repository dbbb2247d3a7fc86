"""A tier the launcher started stops when the launcher dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from stratafl.controller.main import ControllerOptions
from stratafl.launch.tier import tier_command

LAUNCHER = """
import subprocess, sys, time
tier = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(tier.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: it only awaits its reaper
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_tier_stops_when_its_launcher_is_killed(tmp_path):
    ready = tmp_path / "ready"
    options = ControllerOptions(
        workdir=tmp_path / "controller", http_port=0, insecure=True, ready_file=ready
    )
    with subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *tier_command(options)], stdout=subprocess.PIPE, text=True
    ) as launcher:
        assert launcher.stdout is not None
        tier = int(launcher.stdout.readline())
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.2)  # the controller serves: it would run until stopped
            assert ready.exists() and _alive(tier)
        finally:
            launcher.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(tier) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(tier), "the tier outlived its launcher"
