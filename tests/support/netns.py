"""Several hosts on one machine, for end-to-end tests: Linux network namespaces on a bridge.

    switch namespace ──── bridge br0 (no address: a plain layer-2 switch)
        │ veth                │ veth                │ veth
    host namespace        host namespace        host namespace     ...
    eth0 10.A.B.2/24, lo  eth0 10.A.B.3/24, lo  eth0 10.A.B.4/24, lo

Each host sees only its own ``lo`` and ``eth0``: its peers are reachable at their
addresses in a private /24 chosen at random, and nothing else is (no route leaves the
switch). Nothing is made in the machine's root namespace: each veth pair is created with
one end already in the host's namespace and the other in the switch's, and the bridge
lives in the switch namespace. Namespace and switch-side interface names carry a random
suffix, so tests running at the same time never clash.

`Network` is a context manager: `start` builds it, `popen` / `run` start commands inside a
host (``ip netns exec``), and `close` (also on failure) ends the processes it started,
deletes every namespace it made (which deletes their veths) and checks that none is left.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

IP_TIMEOUT_SECONDS = 15.0
"""The longest one ``ip`` command may take."""
STOP_GRACE_SECONDS = 10.0
"""How long a process started in a host gets to end after SIGTERM before SIGKILL."""


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or something the network made was left behind."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            ["ip", *args],
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`ip {' '.join(args)}` took more than {IP_TIMEOUT_SECONDS:g} s") from exc
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def namespaces_unavailable() -> str | None:
    """None if this process may make namespaces, veth pairs and a bridge; else why not,
    in one line fit for `pytest.skip`."""
    if shutil.which("ip") is None:
        return "several-hosts test skipped: the `ip` command (iproute2) is not installed"
    probe = f"strata-probe-{secrets.token_hex(4)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return (
            "several-hosts test skipped: `ip netns add` failed "
            f"({made.stderr.strip() or 'no reason given'}); it needs root (CAP_SYS_ADMIN)"
        )
    try:
        for args in (
            ("-n", probe, "link", "add", "br0", "type", "bridge"),
            ("-n", probe, "link", "add", "a0", "type", "veth", "peer", "name", "b0"),
        ):
            tried = _ip(*args, check=False)
            if tried.returncode != 0:
                return (
                    f"several-hosts test skipped: `ip {' '.join(args[2:5])}` failed in a "
                    f"namespace ({tried.stderr.strip() or 'no reason given'})"
                )
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One host of the network: its namespace and its address on the bridge."""

    name: str
    netns: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host."""
        return ["ip", "netns", "exec", self.netns, *argv]


class Network:
    """A switch namespace holding a bridge and one namespace per host, joined by veths.

    Constructing it only chooses names and addresses; `start` makes them.
    """

    def __init__(self, hosts: Sequence[str], *, rng: random.Random | None = None) -> None:
        if not hosts or len(set(hosts)) != len(hosts) or len(hosts) > 200:
            raise ValueError(f"hosts must be 1 to 200 distinct names, got {list(hosts)}")
        rng = rng or random.Random(secrets.randbits(64))
        self.suffix = f"{rng.getrandbits(24):06x}"
        self.subnet = f"10.{rng.randrange(256)}.{rng.randrange(256)}"
        self.switch = f"strata-{self.suffix}-sw"
        self.hosts = {
            name: Host(name, f"strata-{self.suffix}-h{i}", f"{self.subnet}.{i + 2}")
            for i, name in enumerate(hosts)
        }
        self._made: list[str] = []  # namespaces made so far, to delete in `close`
        self._processes: list[subprocess.Popen[bytes]] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/24"

    def start(self) -> Network:
        """Make the switch and every host; on failure, whatever was made is deleted."""
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts.values()):
                port = f"p{i}-{self.suffix}"  # the switch's side; at most 15 characters
                self._add_namespace(host.netns)
                self._join(host, port)
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _join(self, host: Host, port: str) -> None:
        """One veth pair, made inside the host's namespace with its peer created straight
        in the switch's: neither end ever exists in the root namespace."""
        _ip(
            "-n", host.netns, "link", "add", "eth0", "type", "veth",
            "peer", "name", port, "netns", self.switch,
        )  # fmt: skip
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")

    def popen(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``host``, its output appended to ``log``; `close` ends it.

        ``ip netns exec`` execs the command in place, so the process is the command itself.
        """
        with open(log, "ab") as out:
            process = subprocess.Popen(
                host.command(*argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
            )
        self._processes.append(process)
        return process

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Run ``argv`` inside ``host`` to its end (at most ``timeout`` s); its stdout.

        Raises `NetnsError` with its stderr if it fails or takes too long.
        """
        try:
            done = subprocess.run(
                host.command(*argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
            )
        except subprocess.TimeoutExpired as exc:
            raise NetnsError(
                f"{argv[:4]} on {host.name} took more than {timeout:g} s:\n{exc.stderr!r}"
            ) from exc
        if done.returncode != 0:
            raise NetnsError(
                f"{list(argv[:4])} on {host.name} exited with {done.returncode}:\n{done.stderr}"
            )
        return done.stdout

    def close(self) -> None:
        """End every process started in the hosts, delete every namespace made (their veths
        go with them), and raise `NetnsError` if any is left."""
        _stop(self._processes)
        self._processes.clear()
        for name in self._made:
            # A process a started one left behind keeps its namespace alive after delete:
            # every process inside a namespace this network made descends from the test.
            _stop_pids(_ip("netns", "pids", name, check=False).stdout.split())
        left = []
        for name in reversed(self._made):
            if _ip("netns", "delete", name, check=False).returncode != 0:
                left.append(name)
        self._made.clear()
        listed = _ip("netns", "list", check=False).stdout
        left += [line.split()[0] for line in listed.splitlines() if self.suffix in line]
        if left:
            raise NetnsError(f"namespaces left behind: {sorted(set(left))}")

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stop_pids(pids: Sequence[str]) -> None:
    for pid in pids:
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
