"""The controller's app packages (`strata app publish`): files addressed by their SHA-256.

A package is a wheel or a source archive (``.tar.gz``, ``.zip``) that a session names by
its digest (`SessionConfig.app_sha256`). It is kept beside the models, in the model store
(a folder or any fsspec URL), under ``<root>/apps/<sha256>/<file name>``: the file keeps
its name because pip reads a wheel's name and version from it. The model store lists only
``<root>/*.safetensors``, so its sweeps never see this folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

import fsspec

from stratafl.errors import ConfigError, NotFoundError
from stratafl.records import AppRecord
from stratafl.settings import APP_FILE_PATTERN, SHA256_PATTERN

__all__ = ["AppStore"]


class AppStore:
    """App packages by digest under ``<root>/apps``; constructing it does no I/O."""

    def __init__(self, root: str | Path) -> None:
        self._fs, base = fsspec.core.url_to_fs(str(root))
        self._root = f"{base}/apps"

    def put_file(self, sha256: str, filename: str, local_path: Path) -> AppRecord:
        """Store a package whose digest the caller computed; publishing the same bytes
        again changes nothing. The copy is renamed into place once complete."""
        if not re.fullmatch(APP_FILE_PATTERN, filename):
            raise ConfigError(
                f"app file name {filename!r} must end in .whl, .tar.gz or .zip and have no "
                "folder: publish the wheel or source archive itself"
            )
        existing = self._find(sha256)
        if existing is None:
            folder = f"{self._root}/{sha256}"
            self._fs.makedirs(folder, exist_ok=True)
            staging = f"{self._root}/{sha256}.partial"
            self._fs.put_file(str(local_path), staging)
            self._fs.mv(staging, f"{folder}/{filename}")
        return self.record(sha256)

    def record(self, sha256: str) -> AppRecord:
        path = self._find(sha256)
        if path is None:
            raise NotFoundError(
                f"no app package {sha256} at the controller: publish it first "
                "(strata app publish FILE) or list them (strata app list)"
            )
        name = path.rsplit("/", 1)[-1]
        return AppRecord(sha256=sha256, filename=name, size_bytes=int(self._fs.size(path)))

    def records(self) -> list[AppRecord]:
        """Every package, by digest."""
        if not self._fs.exists(self._root):
            return []
        digests = {str(p).rsplit("/", 2)[-2] for p in self._fs.glob(f"{self._root}/*/*")}
        return [self.record(d) for d in sorted(digests) if re.fullmatch(SHA256_PATTERN, d)]

    def open(self, sha256: str) -> BinaryIO:
        path = self._find(sha256)
        if path is None:
            self.record(sha256)  # raises NotFoundError naming the fix
        stream: BinaryIO = self._fs.open(path, "rb")
        return stream

    def _find(self, sha256: str) -> str | None:
        if not re.fullmatch(SHA256_PATTERN, sha256):
            raise NotFoundError(f"{sha256!r} is not a SHA-256 (64 lowercase hex digits)")
        folder = f"{self._root}/{sha256}"
        if not self._fs.exists(folder):
            return None
        files = sorted(str(p) for p in self._fs.ls(folder, detail=False))
        return files[0] if files else None
