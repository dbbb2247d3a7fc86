"""The model store: global models as safetensors files in a folder or object store.

One code path for a local folder (the embedded default) and any fsspec URL (``s3://...``
later). A model is written under a temporary name and renamed when complete, so a crash
never leaves a torn model behind an id that the state store already points at.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import BinaryIO

import fsspec

from stratafl.errors import NotFoundError


def new_model_id() -> str:
    return uuid.uuid4().hex


class ModelStore:
    """Stores model files by id under ``root`` (a path or fsspec URL)."""

    def __init__(self, root: str | Path) -> None:
        self._fs, self._root = fsspec.core.url_to_fs(str(root))
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

    def local_path(self, model_id: str) -> Path:
        """A local file path for the model (only for local stores)."""
        path = Path(self._path(model_id))
        if not path.exists():
            raise NotFoundError(f"model {model_id!r} is not in the model store at {self._root}")
        return path

    def exists(self, model_id: str) -> bool:
        return bool(self._fs.exists(self._path(model_id)))

    def size(self, model_id: str) -> int:
        return int(self._fs.size(self._path(model_id)))
