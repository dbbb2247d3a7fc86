"""A Flower 1.42 federation on loopback for the side-by-side benchmark, as processes.

``flower-superlink`` (insecure) and one ``flower-supernode`` per client, each its own
process from Flower's own virtualenv (never stratafl's), then ``flwr run`` of
``flower_app/``, whose ServerApp writes its round durations to a file. Every wait has a
deadline and every failure becomes one `FlowerError` line; leaving the ``with`` block
stops every process of the run, including the helpers Flower's daemons start in sessions
of their own (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

FLOWER_APP = Path(__file__).resolve().parent / "flower_app"
MARKER = "STRATAFL_PEER_BENCH"
"""Environment variable every Flower process of a run inherits, set to that run's token:
Flower's daemons start their helpers in new sessions, so the token, not a process group,
is what finds all of them at teardown."""


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # Flower colours its log levels


class FlowerError(Exception):
    """Flower's side did not finish; the message is the one line the benchmark prints."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def last_line(path: Path) -> str:
    """Where a process that stopped says why: the last exception a traceback in its log
    names (the lines after it are often a generic "startup failed"), else its last line."""
    try:
        text = ANSI_ESCAPE.sub("", path.read_text(errors="replace"))
        lines = [line.strip() for line in text.splitlines()]
    except OSError:
        return "(no log)"
    exception = re.compile(r"^[\w.]+(Error|Exception|Exit)\b.*")
    return next(
        (line for line in reversed(lines) if exception.match(line)),
        next((line for line in reversed(lines) if line), "(no output)"),
    )


def marked_pids(token: str) -> list[int]:
    """Every live process whose environment carries ``MARKER=token`` (Linux /proc)."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class FlowerFederation:
    """A SuperLink and one SuperNode per client on loopback; a context manager.

    Leaving the ``with`` block stops every process the federation started, including
    the ones Flower's daemons started themselves (found by the run's token).
    """

    def __init__(self, venv: Path, clients: int, workdir: Path) -> None:
        self.venv = venv
        self.clients = clients
        self.workdir = workdir
        self.token = uuid.uuid4().hex
        self.port = free_port()
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.env = dict(
            os.environ,
            FLWR_HOME=str(workdir / "flwr-home"),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            # Flower's daemons start their helpers (flower-superexec, ...) from PATH
            PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            **{MARKER: self.token},
        )

    def __enter__(self) -> FlowerFederation:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        home = self.workdir / "flwr-home"
        home.mkdir(parents=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "bench"\n\n[superlink.bench]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.daemons["superlink"] = self._spawn(
            "superlink",
            "flower-superlink",
            "--insecure",
            "--disable-runtime-dependency-installation",
            "--host=127.0.0.1",
            f"--port={self.port}",
        )
        self._wait_for_superlink(timeout=60.0)
        for i in range(self.clients):
            self.daemons[f"supernode-{i}"] = self._spawn(
                f"supernode-{i}",
                "flower-supernode",
                "--insecure",
                f"--superlink=127.0.0.1:{self.port}",
                "--host=127.0.0.1",
                f"--port={free_port()}",
            )

    def _spawn(self, name: str, program: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            return subprocess.Popen(
                [str(self.venv / "bin" / program), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )

    def _wait_for_superlink(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_daemons()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.2)
        raise FlowerError(f"the SuperLink did not listen within {timeout:g} s")

    def _check_daemons(self) -> None:
        for name, process in self.daemons.items():
            if process.poll() is not None:
                code = process.returncode
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise FlowerError(f"{name} {how}: {last_line(self.workdir / f'{name}.log')}")

    def run(self, rounds: int, params: int, timeout: float) -> list[float]:
        """Run the app once; the round durations its ServerApp measured."""
        timings = self.workdir / "timings.json"
        run_config = (
            f"num-rounds={rounds} num-clients={self.clients} params={params} "
            f"node-wait-seconds={min(timeout, 300.0)} timings-file={json.dumps(str(timings))}"
        )
        command = ["run", str(FLOWER_APP), "bench", "--stream", "--run-config", run_config]
        flwr = self._spawn("flwr-run", "flwr", *command)
        deadline = time.monotonic() + timeout
        try:
            while flwr.poll() is None:
                self._check_daemons()
                if time.monotonic() > deadline:
                    raise FlowerError(f"the run did not finish within {timeout:g} s")
                time.sleep(0.5)
        finally:
            if flwr.poll() is None:
                flwr.kill()
                flwr.wait()
        if not timings.exists():
            said = last_line(self.workdir / "flwr-run.log")
            raise FlowerError(f"the ServerApp wrote no timings (flwr run said: {said})")
        result = json.loads(timings.read_text())
        if "error" in result:
            raise FlowerError(f"the ServerApp failed: {result['error']}")
        durations = [float(seconds) for seconds in result["round_seconds"]]
        if len(durations) != rounds:
            raise FlowerError(f"the ServerApp timed {len(durations)} rounds, not {rounds}")
        return durations

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to every process of this run, SIGKILL to those still there after
        ``grace`` seconds."""
        for pid in marked_pids(self.token):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for process in self.daemons.values():
                process.poll()  # reap our own children so they leave /proc
            if not marked_pids(self.token):
                break
            time.sleep(0.2)
        while leftover := marked_pids(self.token):  # SIGKILL cannot be refused
            for pid in leftover:
                _signal(pid, signal.SIGKILL)
            time.sleep(0.1)
        for process in self.daemons.values():
            process.wait()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
