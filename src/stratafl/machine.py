"""What this machine allows a process: open files and memory (Linux first, POSIX otherwise).

A combiner holds one socket per connected client, and a swarm process one per simulated
client, so both take the hard limit on open files as their soft one before they count.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

UNLIMITED_FILES = 1 << 20
"""What an unlimited hard limit on open files counts as (Linux's own default ceiling)."""


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one where allowed; return the limit
    in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a kernel ceiling below the hard limit: keep soft
            pass
    return UNLIMITED_FILES if soft == resource.RLIM_INFINITY else soft


def available_memory_bytes() -> int:
    """Memory the kernel could give now without swapping (MemAvailable), or the free
    physical pages where /proc/meminfo is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
