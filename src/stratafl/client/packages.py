"""App packages a session ships (`docs/apps.md`): fetched, checked, installed, loaded.

A task may name an app package by its SHA-256 and entry point (`settings.AppRef`). The
client runs it only if its site allows that digest (``strata client start --allow-app
SHA256``), fetches it from the controller with its own token, checks the bytes against
the digest, installs it with ``pip install --no-deps --no-index --target`` into a folder
of its own (``<workdir>/apps/<sha256>``; the running interpreter's site-packages is never
touched), puts that folder on ``sys.path`` and loads the entry point as ``--app`` loads
one. Each package is installed and loaded once per process. Its dependencies must be
installed at the site already: a package carries the app's own code only.

A digest the site does not allow, bytes that do not match, or a package pip cannot
install raise `AppRefused` with one line: the protocol fails the task with it, and the
client goes on serving other sessions.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from stratafl.client.app import ClientApp, ClientContext, load_app
from stratafl.errors import PermissionDenied
from stratafl.restapi import ControllerClient
from stratafl.settings import AppRef
from stratafl.transport.credentials import PeerCredentials

__all__ = ["MAX_APP_BYTES", "AppPackages", "AppRefused", "Fetch", "app_fetcher"]

MAX_APP_BYTES = 64 << 20
"""The largest package a client downloads (the controller takes no larger one)."""
INSTALL_TIMEOUT_SECONDS = 600.0

Fetch = Callable[[str, Path, str | None], Path]
"""``fetch(sha256, folder, token)``: download the package into ``folder``; its path."""


class AppRefused(PermissionDenied):
    """A task's app package this client will not run: not allowed here, not the bytes
    its digest names, or not installable."""


def app_fetcher(controller: str, credentials: PeerCredentials) -> Fetch:
    """Download packages from ``controller`` over its REST API, as this client."""

    def fetch(sha256: str, folder: Path, token: str | None) -> Path:
        verify = credentials.http_verify()
        with ControllerClient(controller, token=token, verify=verify, timeout=60) as api:
            return api.download_app(sha256, folder, limit=MAX_APP_BYTES)

    return fetch


class AppPackages:
    """The app packages one client may run; constructing it reads and starts nothing."""

    def __init__(
        self,
        allowed: Iterable[str],
        *,
        context: ClientContext,
        fetch: Fetch,
        workdir: Path | None = None,
    ) -> None:
        self.allowed = frozenset(allowed)
        self._context = context
        self._fetch = fetch
        self._workdir = workdir
        self._apps: dict[AppRef, ClientApp] = {}
        self._lock = threading.Lock()  # tasks run in worker threads: one install at a time

    def app(self, ref: AppRef, token: str | None) -> ClientApp:
        """The app ``ref`` names, installed and loaded on first use."""
        if ref.sha256 not in self.allowed:
            raise AppRefused(
                f"app package {ref.sha256} is not allowed at this site: if you trust it, "
                f"start the client with --allow-app {ref.sha256}"
            )
        with self._lock:
            if ref not in self._apps:
                target = self._installed(ref.sha256, token)
                if str(target) not in sys.path:
                    sys.path.append(str(target))
                self._apps[ref] = load_app(ref.entry, self._context)
            return self._apps[ref]

    def _installed(self, sha256: str, token: str | None) -> Path:
        """The folder the package is installed in: installed now unless it was before
        (a folder appears only once pip finished)."""
        root = self._root()
        target = root / sha256
        if target.is_dir():
            return target
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as scratch:
            package = self._fetch(sha256, Path(scratch), token)
            actual = _sha256_of(package)
            if actual != sha256:
                raise AppRefused(
                    f"app package refused: its bytes have SHA-256 {actual}, not {sha256}; "
                    "the controller's copy is not the package the session names"
                )
            staged = Path(scratch) / "site"
            _pip_install(package, staged)
            shutil.move(staged, target)
        return target

    def _root(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="strata-client-"))
        root = self._workdir / "apps"
        root.mkdir(parents=True, exist_ok=True)
        return root


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pip_install(package: Path, target: Path) -> None:
    """Install ``package`` (no dependencies, nothing from an index) into ``target``."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "--disable-pip-version-check", "--quiet"]
    command += ["--target", str(target), str(package)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired as exc:
        raise AppRefused(f"pip did not install {package.name} in {exc.timeout} s") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise AppRefused(
            f"pip could not install app package {package.name}: "
            f"{lines[-1] if lines else 'no reason given'}"
        )
