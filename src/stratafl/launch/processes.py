"""Start and stop the tiers as real processes, each announcing itself through a ready file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stratafl.errors import UnavailableError
from stratafl.launch.tier import ready_file_of, tier_command

if TYPE_CHECKING:
    from stratafl.launch.tier import TierOptions

READY_TIMEOUT_SECONDS = 60.0


@dataclass
class Tier:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_file: Path | None = None

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> str:
        """The ready file's content once it appears (it is written after the tier serves)."""
        assert self.ready_file is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists() and (text := self.ready_file.read_text()):
                return text
            if self.process.poll() is not None:
                said = last_log_line(self.log_path)
                raise UnavailableError(
                    f"{self.name} exited with code {self.process.returncode} before it was ready"
                    f"{f' ({said})' if said else ''}; see {self.log_path}"
                )
            time.sleep(0.02)
        raise UnavailableError(
            f"{self.name} was not ready within {timeout:g} s; see {self.log_path}"
        )

    def kill(self) -> None:
        """kill -9: no chance to clean up, as in a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@dataclass
class ProcessGroup:
    """Every process a launcher started, so that all of them are stopped at the end."""

    workdir: Path
    tiers: list[Tier] = field(default_factory=list)

    def ready_file(self, name: str) -> Path:
        """A fresh path for tier ``name`` to announce itself at: put it in its options."""
        path = self.workdir / "ready" / f"{name}.ready"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        return path

    def log_path(self, name: str) -> Path:
        """Where tier ``name`` writes its output."""
        return self.workdir / "logs" / f"{name}.log"

    def start(self, name: str, options: TierOptions) -> Tier:
        """Run a tier in a new process (`stratafl.launch.tier`), its output in logs/NAME.log."""
        log_path = self.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = tier_command(options)
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
            )
        tier = Tier(name, process, log_path, ready_file_of(options))
        self.tiers.append(tier)
        return tier

    def stop_all(self, grace: float = 5.0) -> None:
        for tier in self.tiers:
            if tier.process.poll() is None:
                tier.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for tier in self.tiers:
            try:
                tier.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                tier.kill()


def last_log_line(path: Path) -> str:
    """The log's last non-blank line: where a tier that stopped says why."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")
