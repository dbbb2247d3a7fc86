"""The combiner's work folder: one live combiner per folder, nothing left from a dead one.

A combiner spools updates to ``<workdir>/updates`` and caches global models in
``<workdir>/models``. A combiner killed with ``kill -9`` cannot clean up, and no later
process knows those files (its model cache and its rounds start empty), so they would
stay on disk forever. Each combiner therefore clears both folders when it starts. That
is safe only if no other live combiner uses the folder: a lock on ``<workdir>/.lock``
(released by the kernel when its holder dies, however it dies) makes sure of it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType

from stratafl.errors import ConfigError

LEFTOVERS = ("updates", "models")
"""What a combiner writes and only a live combiner can use."""


class WorkdirClaim:
    """Holds a combiner's work folder while it runs; `claim` takes it and clears leftovers."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._fd: int | None = None

    def claim(self) -> WorkdirClaim:
        """Lock the folder (`ConfigError` if a live combiner holds it), then clear what a
        dead predecessor left behind."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.workdir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ConfigError(
                f"another combiner is running in {self.workdir}; give each combiner its own "
                "--workdir"
            ) from exc
        self._fd = fd
        for name in LEFTOVERS:
            shutil.rmtree(self.workdir / name, ignore_errors=True)
            (self.workdir / name).mkdir()
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> WorkdirClaim:
        return self.claim()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
