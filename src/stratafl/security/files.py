"""Writing key and certificate files so that no reader ever sees half a file.

A private key is created readable by its owner only (mode 0600) from its first byte: the
temporary file is opened with that mode, then renamed into place, so there is no moment
when the key sits on disk with looser permissions. `create_private` never replaces an
existing file (two processes racing to create a key both end up with the same one).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from stratafl.errors import ConfigError

__all__ = ["create_private", "read_pem", "write_private", "write_public"]

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
MAX_PEM_BYTES = 1 << 20
"""No key, certificate or request file of ours is near this; a larger one is not ours."""


def _temporary(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; set exactly what we mean
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd)
    return tmp


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = _temporary(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Write (or replace) ``path`` atomically, readable by its owner only."""
    _replace(path, data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    """Write (or replace) ``path`` atomically, readable by everyone (certificates)."""
    _replace(path, data, PUBLIC_MODE)


def create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` with mode 0600 unless it exists; True if this call created it."""
    tmp = _temporary(path, data, PRIVATE_MODE)
    try:
        os.link(tmp, path)  # atomic, and fails if another process got there first
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return True


def read_pem(path: Path, what: str) -> bytes:
    """The bytes of a PEM file, or a ConfigError naming the file and what it should hold."""
    try:
        size = path.stat().st_size
        if size > MAX_PEM_BYTES:
            raise ConfigError(f"{path} is {size} bytes, too large for {what}; check the path")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} from {path} ({exc.strerror or exc}); check the path"
        ) from exc


def read_token(path: Path) -> str:
    """A token handed over in a file (one line), or a ConfigError naming the file."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}") from exc
