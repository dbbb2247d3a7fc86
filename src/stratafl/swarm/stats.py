"""What a swarm counts: per process while it runs, summed over processes by the fleet."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from stratafl.client.counters import ClientCounters

__all__ = ["SwarmStats", "peak_rss_bytes", "rss_bytes"]


@dataclass
class SwarmStats(ClientCounters):
    """Counters of one swarm process (or, summed, of a fleet): the protocol's, which all
    the process's clients add to, and the process's own; plain ints, so a process writes
    them as JSON for the fleet to read."""

    clients: int = 0
    rss_bytes: int = 0
    """The process's peak resident memory so far."""
    baseline_rss_bytes: int = 0
    """The process's RSS before its clients started: RSS minus this is the clients' cost."""

    def bytes_per_client(self) -> float:
        return (self.rss_bytes - self.baseline_rss_bytes) / self.clients if self.clients else 0.0

    def __add__(self, other: SwarmStats) -> SwarmStats:
        return SwarmStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def write(self, path: Path) -> None:
        """Replace ``path`` atomically: a reader never sees half a file."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> SwarmStats | None:
        """The counters a process last wrote, or None if it wrote none yet."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in known})


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process now (Linux /proc), 0 where it cannot be read."""
    return _status_kib(pid, "VmRSS:") * 1024


def peak_rss_bytes(pid: int | str = "self") -> int:
    """The highest resident memory a process reached (Linux /proc), 0 if unknown."""
    return _status_kib(pid, "VmHWM:") * 1024


def _status_kib(pid: int | str, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
