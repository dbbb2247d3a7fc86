"""The model store: global models as safetensors files in a folder or object store.

One code path for a local folder (the embedded default) and any fsspec URL:
``s3://bucket/prefix`` (with ``pip install 'stratafl[s3]'``; credentials and the endpoint
come from the standard ``AWS_*`` environment variables, see docs/deployment.md),
``memory://`` and the rest. A model is written under a temporary name and renamed when
complete, so a crash never leaves a torn model behind an id that the state store already
points at. Readers open models as streams (`open`), never as local paths, so that
downloads work from every store.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import BinaryIO

import fsspec

from stratafl.errors import ConfigError, NotFoundError


def new_model_id() -> str:
    return uuid.uuid4().hex


class ModelStore:
    """Stores model files by id under ``root`` (a path or fsspec URL)."""

    def __init__(self, root: str | Path) -> None:
        try:  # builds the filesystem object only: no I/O until the first call
            self._fs, self._root = fsspec.core.url_to_fs(str(root))
        except ImportError as exc:  # fsspec knows the protocol; its package is missing
            raise ConfigError(
                f"the model store {root} needs a package that is not installed ({exc}); "
                "for s3:// run pip install 'stratafl[s3]'"
            ) from exc
        except ValueError as exc:
            raise ConfigError(
                f"the model store {root} is neither a folder nor an fsspec URL ({exc}); "
                "pass e.g. /srv/models or s3://bucket/prefix"
            ) from exc
        self._made = False

    def _path(self, model_id: str) -> str:
        if not model_id or "/" in model_id or model_id.startswith("."):
            raise NotFoundError(f"model id {model_id!r} is not a valid id")
        return f"{self._root}/{model_id}.safetensors"

    def _ensure_root(self) -> None:
        if not self._made:
            self._fs.makedirs(self._root, exist_ok=True)
            self._made = True

    def put_file(self, model_id: str, local_path: Path) -> None:
        """Copy a finished local model file into the store (atomically on local disks)."""
        self._ensure_root()
        target = self._path(model_id)
        staging = f"{target}.partial"
        self._fs.put_file(str(local_path), staging)
        self._fs.mv(staging, target)

    def open(self, model_id: str) -> BinaryIO:
        try:
            stream: BinaryIO = self._fs.open(self._path(model_id), "rb")
        except FileNotFoundError:
            raise NotFoundError(
                f"model {model_id!r} is not in the model store; list models with GET /api/v1/models"
            ) from None
        return stream

    def exists(self, model_id: str) -> bool:
        return bool(self._fs.exists(self._path(model_id)))

    def size(self, model_id: str) -> int:
        try:
            return int(self._fs.size(self._path(model_id)))
        except FileNotFoundError:
            raise NotFoundError(f"model {model_id!r} is not in the model store") from None

    def delete(self, model_id: str) -> None:
        """Delete a model's file; a file already gone is no error (deletes may be re-run)."""
        path = self._path(model_id)
        if self._fs.exists(path):
            self._fs.rm(path)

    def ids(self) -> list[str]:
        """The id of every complete file in the store (models and their optimiser states)."""
        if not self._fs.exists(self._root):
            return []
        names = (
            str(path).rsplit("/", 1)[-1] for path in self._fs.glob(f"{self._root}/*.safetensors")
        )
        return sorted(name.removesuffix(".safetensors") for name in names)

    def discard_partials(self) -> list[str]:
        """Delete files a writer left half-copied (``*.partial``: never listed, since a
        model is listed only once renamed); returns their paths. Run before any writer."""
        if not self._fs.exists(self._root):
            return []
        partials = [str(p) for p in self._fs.glob(f"{self._root}/*.safetensors.partial")]
        for path in partials:
            self._fs.rm(path)
        return partials
