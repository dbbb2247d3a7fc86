"""Fashion-MNIST (Xiao et al. 2017): 70k 28x28 grey images of clothes in 10 classes.

Every client process loads the dataset, so loading must be cheap. The first load parses the
IDX files (from the Debian package, the cache folder, or a download into the cache) and
writes a decompressed ``.npz`` (uint8, no pickle) into the cache folder; later loads read
that file, which takes a fraction of the time of gunzipping and parsing IDX again.

Where the files are looked for, in order:

1. ``<cache>/fashion-mnist.npz`` written by an earlier load;
2. ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``);
3. the IDX ``.gz`` files in the cache folder;
4. a download of the public files into the cache folder.

The cache folder is ``$STRATAFL_DATA_DIR`` if set, else ``~/.cache/stratafl/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from stratafl.errors import ConfigError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` puts the IDX files."""

DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""The public files. The S3 *website* endpoint serves plain HTTP only (no TLS), so every
download is checked structurally (magic, shape, label range) before it is used."""

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
NPZ_NAME = "fashion-mnist.npz"
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_EXPECTED_SHAPES = {
    "x_train": (60_000, 28, 28),
    "y_train": (60_000,),
    "x_test": (10_000, 28, 28),
    "y_test": (10_000,),
}
_IDX_UBYTE = 0x08
_DOWNLOAD_TIMEOUT_S = 60.0
_REFETCH = "delete it and load again (or: apt-get install --reinstall dataset-fashion-mnist)"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as uint8 rows of 784 pixels, labels as int64 class ids (0-9).

    The images stay bytes until asked for: `x_train` and `x_test` are float32 rows in
    [0, 1], converted on first use. A client selects its share first (`select`), so each
    process converts only its own examples, not all 70,000 (a second of CPU per client).
    """

    train_images: np.ndarray
    y_train: np.ndarray
    test_images: np.ndarray
    y_test: np.ndarray

    @cached_property
    def x_train(self) -> np.ndarray:
        return _to_features(self.train_images)

    @cached_property
    def x_test(self) -> np.ndarray:
        return _to_features(self.test_images)

    def select(self, train: np.ndarray, test: np.ndarray) -> Dataset:
        """The examples at the indexes ``train`` and ``test``, still as bytes."""
        return Dataset(
            self.train_images[train], self.y_train[train], self.test_images[test], self.y_test[test]
        )

    def subset(self, num_train: int, num_test: int, seed: int = 0) -> Dataset:
        """A random subset without replacement: small, reproducible data for tests and smoke
        runs. Sizes larger than the split are capped at the split size."""
        rng = np.random.default_rng(seed)
        tr = np.sort(rng.permutation(len(self.y_train))[: max(0, num_train)])
        te = np.sort(rng.permutation(len(self.y_test))[: max(0, num_test)])
        return self.select(tr, te)


def default_cache_dir() -> Path:
    """``$STRATAFL_DATA_DIR`` if set, else ``~/.cache/stratafl/fashion-mnist``."""
    override = os.environ.get("STRATAFL_DATA_DIR")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "stratafl" / "fashion-mnist"


def load_fashion_mnist(
    cache_dir: Path | None = None,
    *,
    system_dir: Path | None = SYSTEM_DIR,
    url: str | None = DOWNLOAD_URL,
) -> Dataset:
    """Load Fashion-MNIST from the fastest source available (see the module docstring).

    ``system_dir=None`` skips the system copy and ``url=None`` forbids downloading; both
    exist so tests and offline users can pin where data comes from.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    npz_path = cache / NPZ_NAME
    raw = _read_npz(npz_path)
    if raw is None:
        raw = _read_idx_files(_find_or_download(cache, system_dir, url))
        _write_npz(npz_path, raw)
    return Dataset(
        train_images=raw["x_train"].reshape(len(raw["x_train"]), -1),
        y_train=raw["y_train"].astype(np.int64),
        test_images=raw["x_test"].reshape(len(raw["x_test"]), -1),
        y_test=raw["y_test"].astype(np.int64),
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse one gzipped IDX file of unsigned bytes (the format of the (Fashion-)MNIST files).

    Layout: two zero bytes, a type byte (0x08 = ubyte), the number of dimensions, one
    big-endian uint32 per dimension, then the data in C order.
    """
    try:
        with gzip.open(path, "rb") as f:
            blob = f.read()
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{path} is not a readable gzip file ({exc}); {_REFETCH}") from exc
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != _IDX_UBYTE:
        raise ConfigError(
            f"{path} is not an IDX file of unsigned bytes (magic {blob[:4].hex()!r}, "
            f"expected '0000080N'); {_REFETCH}"
        )
    ndim = blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise ConfigError(f"{path} ends inside its IDX header; {_REFETCH}")
    dims = tuple(int(d) for d in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(blob) - header != expected:
        raise ConfigError(
            f"{path} holds {len(blob) - header} data bytes but its header {list(dims)} "
            f"promises {expected}; {_REFETCH}"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _to_features(images: np.ndarray) -> np.ndarray:
    flat = images.astype(np.float32)
    flat *= np.float32(1.0 / 255.0)
    return flat


def _find_or_download(cache: Path, system_dir: Path | None, url: str | None) -> Path:
    for folder in (system_dir, cache):
        if folder is not None and all((folder / name).is_file() for name in FILES.values()):
            return folder
    if url is None:
        raise ConfigError(_missing_message(cache, system_dir, "downloading is disabled"))
    try:
        _download(url, cache)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ConfigError(_missing_message(cache, system_dir, f"download failed: {exc}")) from exc
    return cache


def _missing_message(cache: Path, system_dir: Path | None, why: str) -> str:
    names = ", ".join(FILES.values())
    return (
        f"Fashion-MNIST not found ({why}). Get it with `apt-get install dataset-fashion-mnist` "
        f"(files land in {system_dir or SYSTEM_DIR}), or put {names} from {DOWNLOAD_URL} "
        f"into {cache} (set STRATAFL_DATA_DIR to use another folder)."
    )


def _download(url: str, cache: Path) -> None:
    """Fetch the missing files into ``cache``, each via a temporary name, so a broken
    transfer never leaves a half file where the next load would trust it."""
    cache.mkdir(parents=True, exist_ok=True)
    base = url if url.endswith("/") else url + "/"
    for name in FILES.values():
        target = cache / name
        if target.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(base + name, timeout=_DOWNLOAD_TIMEOUT_S) as response,
            ):
                shutil.copyfileobj(response, out)
            read_idx(Path(tmp))  # reject a truncated or wrong file before it gets a real name
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _read_idx_files(folder: Path) -> dict[str, np.ndarray]:
    raw = {key: read_idx(folder / name) for key, name in FILES.items()}
    _check_raw(raw, str(folder))
    return raw


def _check_raw(raw: dict[str, np.ndarray], where: str) -> None:
    for key, shape in _EXPECTED_SHAPES.items():
        if raw[key].shape != shape or raw[key].dtype != np.uint8:
            raise ConfigError(
                f"{where}: {key} is {raw[key].dtype}{list(raw[key].shape)}, expected "
                f"uint8{list(shape)}; these are not the Fashion-MNIST files. {_REFETCH}"
            )
    for key in ("y_train", "y_test"):
        if raw[key].max() >= len(CLASSES):
            raise ConfigError(f"{where}: {key} has labels above 9; {_REFETCH}")


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The decompressed cache, or None when it is absent or unusable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {key: npz[key] for key in FILES}
        _check_raw(raw, str(path))
    except (OSError, ValueError, KeyError):  # ConfigError is a ValueError
        return None
    return raw


def _write_npz(path: Path, raw: dict[str, np.ndarray]) -> None:
    """Write the cache atomically: many client processes may race to create it, and a
    reader must never see half a file. A read-only cache folder only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fashion-mnist.", suffix=".npz")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(
                out,
                x_train=raw["x_train"],
                y_train=raw["y_train"],
                x_test=raw["x_test"],
                y_test=raw["y_test"],
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)
