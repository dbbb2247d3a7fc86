"""A swarm: N light clients over P processes, started, watched and stopped from here.

`Fleet` gets one identity per client (`stratafl.swarm.identities`), splits them into P
runs, and starts each run as a worker process (``python -m stratafl.swarm``, running
`stratafl.swarm.worker`) with its own private identities file. The workers write their
counters every second; `Fleet.totals` sums them. Constructing a `Fleet` starts nothing;
use it as a context manager.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stratafl.errors import StrataError, UnavailableError
from stratafl.restapi import ControllerClient
from stratafl.security.files import read_token, write_private
from stratafl.swarm.identities import (
    Identity,
    as_lines,
    insecure_identities,
    mint_tokens,
    read_tokens,
    split,
    write_tokens,
)
from stratafl.swarm.options import SwarmOptions
from stratafl.swarm.stats import SwarmStats
from stratafl.swarm.worker import WorkerSpec

__all__ = ["Fleet", "WorkerProcess", "fleet_identities", "follow"]

STOP_SECONDS = 15.0
"""How long a worker may take to close its clients after SIGTERM before it is killed."""
MINT_TIMEOUT_SECONDS = 60.0


def fleet_identities(options: SwarmOptions) -> list[Identity]:
    """One identity per client: minted with the admin token, read from the tokens file,
    or (insecure) just ids."""
    if options.insecure:
        return insecure_identities(options.id_prefix, options.clients)
    if options.tokens_file is not None:
        return read_tokens(options.tokens_file, options.clients)
    assert options.token_file is not None  # SwarmOptions.check demands one of the two
    with ControllerClient(
        options.controller,
        token=read_token(options.token_file),
        verify=options.ca_file or True,
        timeout=MINT_TIMEOUT_SECONDS,
    ) as controller:
        identities = mint_tokens(controller, options.id_prefix, options.clients)
    if options.save_tokens is not None:
        write_tokens(options.save_tokens, identities)
    return identities


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen[bytes]
    stats_file: Path
    log_file: Path

    def last_log_line(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""


class Fleet:
    """The worker processes of one swarm; `start` them, read `totals`, `stop` them."""

    def __init__(self, options: SwarmOptions) -> None:
        options.check()
        self.options = options
        self.workers: list[WorkerProcess] = []
        self._tmp: Path | None = None

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def workdir(self) -> Path:
        """Where the workers' specs, identities, counters and logs are (private)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="strata-swarm-"))
        return self._tmp

    def start(self, identities: list[Identity] | None = None) -> None:
        """Start the workers, each with its run of ``identities`` (default: the options')."""
        options = self.options
        identities = identities if identities is not None else fleet_identities(options)
        first = 0
        for index, run in enumerate(split(identities, options.processes)):
            self.workers.append(self._start_worker(index, first, run))
            first += len(run)

    def _start_worker(self, index: int, first: int, run: list[Identity]) -> WorkerProcess:
        options, folder = self.options, self.workdir
        identities_file = folder / f"worker-{index}.identities"
        write_private(identities_file, as_lines(run).encode("ascii"))
        spec = WorkerSpec(
            controller=options.controller,
            app=options.app,
            identities_file=str(identities_file),
            first_index=first,
            total_clients=options.clients,
            stats_file=str(folder / f"worker-{index}.stats.json"),
            ca_file=None if options.ca_file is None else str(options.ca_file.resolve()),
            app_per_client=options.app_per_client,
            connecting=options.connecting,
            seed=options.seed,
            duration=options.duration,
        )
        spec_file = folder / f"worker-{index}.json"
        spec.write(spec_file)
        log_file = folder / f"worker-{index}.log"
        with open(log_file, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "stratafl.swarm", str(spec_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return WorkerProcess(index, process, Path(spec.stats_file), log_file)

    def totals(self) -> SwarmStats:
        """The workers' latest counters, summed."""
        total = SwarmStats()
        for worker in self.workers:
            total = total + (SwarmStats.read(worker.stats_file) or SwarmStats())
        return total

    def per_process(self) -> list[SwarmStats]:
        return [SwarmStats.read(w.stats_file) or SwarmStats() for w in self.workers]

    def check_alive(self) -> None:
        """Raise `StrataError` with its last log line if a worker exited before its time."""
        for worker in self.workers:
            code = worker.process.poll()
            if code not in (None, 0):
                raise StrataError(
                    f"swarm process {worker.index} exited with code {code} "
                    f"({worker.last_log_line() or 'no output'}); see {worker.log_file}"
                )

    def running(self) -> bool:
        return any(w.process.poll() is None for w in self.workers)

    def wait_connected(self, count: int, timeout: float) -> SwarmStats:
        """Wait until ``count`` clients hold an open task stream; the totals then."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            totals = self.totals()
            if totals.connected >= count:
                return totals
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"only {totals.connected} of {count} swarm clients connected in {timeout:g} s "
                    f"({totals.assign_errors} refused assignments, {totals.stream_errors} "
                    f"stream errors); see the logs in {self.workdir}"
                )
            time.sleep(0.2)

    def stop(self) -> list[SwarmStats]:
        """SIGTERM every worker, kill those still running after a while; their final
        counters. The identities files (tokens) are removed, and the whole private folder
        unless a worker failed (its log stays there)."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        final = self.per_process()
        failed = any(w.process.returncode != 0 for w in self.workers)
        if self._tmp is not None:
            for secret in self._tmp.glob("*.identities"):
                secret.unlink(missing_ok=True)
            if not failed:  # a failed worker's log stays for its reader
                shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.workers = []
        return final


def follow(fleet: Fleet, report: Callable[[SwarmStats], None], every: float) -> None:
    """Report the totals every ``every`` s until the workers end (``duration``) or a
    SIGTERM / Ctrl-C arrives; a worker that fails ends it with its error."""
    with _sigterm_as_interrupt():
        last = time.monotonic()
        try:
            while fleet.running():
                fleet.check_alive()
                time.sleep(0.2)
                if every and time.monotonic() - last >= every:
                    report(fleet.totals())
                    last = time.monotonic()
        except KeyboardInterrupt:
            return
    fleet.check_alive()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the swarm the way Ctrl-C does (the main thread only)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
