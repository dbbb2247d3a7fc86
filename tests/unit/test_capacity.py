"""A combiner's default capacity follows the machine: open files and available memory."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from stratafl.combiner import capacity
from stratafl.combiner.capacity import BYTES_PER_CLIENT, FILES_RESERVED, default_max_clients
from stratafl.machine import available_memory_bytes


def _in_a_process_limited_to(soft: int, hard: int, code: str) -> str:
    """Run ``code`` in a fresh interpreter whose open-files limit is (soft, hard)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    done = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=limit, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_soft_limit_on_open_files_is_raised_to_the_hard_one():
    code = (
        "import resource; from stratafl.machine import raise_open_files_limit as r; "
        "print(r(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    assert _in_a_process_limited_to(300, 700, code) == "700 700"


def test_a_machine_with_few_open_files_gets_a_combiner_of_few_clients():
    code = "from stratafl.combiner.capacity import serving_capacity as s; print(s(None))"
    assert int(_in_a_process_limited_to(512, 1024, code)) == 1024 - FILES_RESERVED


def test_a_machine_with_little_memory_gets_a_combiner_of_few_clients(monkeypatch):
    monkeypatch.setattr(capacity, "available_memory_bytes", lambda: 100 * BYTES_PER_CLIENT)
    assert default_max_clients(10**6) == 50  # half the memory, at each client's peak share
    monkeypatch.setattr(capacity, "available_memory_bytes", lambda: 0)
    assert default_max_clients(10**6) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/meminfo")
def test_available_memory_is_some_of_the_machines_memory_in_bytes():
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total = int(next(x for x in meminfo if x.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < available_memory_bytes() <= total
