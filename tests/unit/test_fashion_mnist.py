"""Fashion-MNIST loading from the real files: every source, the cache, and the failures."""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from stratafl.client.app import ClientContext
from stratafl.data import client_split, partition
from stratafl.data.fashion_mnist import (
    FILES,
    NPZ_NAME,
    SYSTEM_DIR,
    Dataset,
    default_cache_dir,
    load_fashion_mnist,
    read_idx,
)
from stratafl.errors import ConfigError

pytestmark = pytest.mark.skipif(
    not all((SYSTEM_DIR / name).is_file() for name in FILES.values()),
    reason="needs `apt-get install dataset-fashion-mnist`",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fm-cache")


@pytest.fixture(scope="module")
def dataset(cache: Path) -> Dataset:
    return load_fashion_mnist(cache)


def test_a_client_converts_only_its_own_share_to_floats(cache: Path) -> None:
    fresh = load_fashion_mnist(cache)
    context = ClientContext(partition_id=3, num_partitions=7, partitioner="iid", seed=0)
    split = client_split(fresh, context)
    assert split.x_train.dtype == np.float32 and len(split.x_train) == 60_000 // 7
    assert float(split.x_train.max()) <= 1.0
    pixels = fresh.train_images[partition(fresh.y_train, "iid", 7, 0)[3]]
    assert np.allclose(split.x_train, pixels / 255.0, rtol=1e-6, atol=0)
    assert "x_train" not in vars(fresh) and "x_test" not in vars(fresh)  # never converted


def test_shapes_types_and_ranges(dataset: Dataset) -> None:
    assert dataset.x_train.shape == (60_000, 784) and dataset.x_train.dtype == np.float32
    assert dataset.x_test.shape == (10_000, 784) and dataset.x_test.dtype == np.float32
    assert dataset.y_train.dtype == np.int64 and dataset.y_test.dtype == np.int64
    assert 0.0 == dataset.x_train.min() and dataset.x_train.max() == 1.0
    assert np.bincount(dataset.y_train).tolist() == [6000] * 10
    assert np.bincount(dataset.y_test).tolist() == [1000] * 10


def test_first_load_leaves_an_npz_that_later_loads_use_alone(dataset: Dataset, cache: Path) -> None:
    assert (cache / NPZ_NAME).is_file()
    with np.load(cache / NPZ_NAME, allow_pickle=False) as npz:
        assert npz["x_train"].dtype == np.uint8
    again = load_fashion_mnist(cache, system_dir=None, url=None)  # no IDX source at all
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, field), getattr(dataset, field))


def test_a_corrupt_npz_is_rebuilt_from_the_idx_files(tmp_path: Path, dataset: Dataset) -> None:
    (tmp_path / NPZ_NAME).write_bytes(b"not an npz")
    again = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(again.y_test, dataset.y_test)
    with np.load(tmp_path / NPZ_NAME, allow_pickle=False) as npz:
        assert npz["y_test"].shape == (10_000,)


def test_idx_files_in_the_cache_folder_are_used(tmp_path: Path, dataset: Dataset) -> None:
    for name in FILES.values():
        shutil.copy(SYSTEM_DIR / name, tmp_path / name)
    again = load_fashion_mnist(tmp_path, system_dir=None, url=None)
    np.testing.assert_array_equal(again.y_train, dataset.y_train)


def test_env_var_moves_the_default_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STRATAFL_DATA_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("STRATAFL_DATA_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "stratafl" / "fashion-mnist"


def test_no_source_names_the_apt_package_and_the_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path / "cache", system_dir=tmp_path / "nothing", url=None)
    assert str(tmp_path / "cache") in str(info.value)


def test_an_unreachable_download_says_how_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="download failed.*apt-get install"):
        load_fashion_mnist(tmp_path, system_dir=None, url="http://127.0.0.1:9/")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror() -> Iterator[str]:
    """A local HTTP server serving the real files, standing in for the public mirror."""
    handler = partial(_QuietHandler, directory=str(SYSTEM_DIR))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()
        thread.join(timeout=10)


def test_download_fills_the_cache(tmp_path: Path, mirror: str, dataset: Dataset) -> None:
    got = load_fashion_mnist(tmp_path, system_dir=None, url=mirror)
    np.testing.assert_array_equal(got.y_test, dataset.y_test)
    assert all((tmp_path / name).is_file() for name in FILES.values())
    assert not list(tmp_path.glob("*.part"))


def _write_gz(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def test_read_idx_parses_header_and_dims(tmp_path: Path) -> None:
    payload = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(6)
    array = read_idx(_write_gz(tmp_path / "ok.gz", payload))
    assert array.shape == (2, 3) and array.dtype == np.uint8


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + bytes(4), "magic"),
        (bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big"), "header"),
        (bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(3), "promises 5"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path: Path, payload: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_idx(_write_gz(tmp_path / "bad.gz", payload))


def test_read_idx_rejects_a_file_that_is_not_gzip(tmp_path: Path) -> None:
    (tmp_path / "bad.gz").write_bytes(b"hello")
    with pytest.raises(ConfigError, match="not a readable gzip file.*delete it"):
        read_idx(tmp_path / "bad.gz")


def test_wrong_files_in_the_cache_are_named(tmp_path: Path) -> None:
    for key, name in FILES.items():
        src = SYSTEM_DIR / FILES["y_test" if key.startswith("y") else "x_test"]
        shutil.copy(src, tmp_path / name)  # the test set where the train set belongs
    with pytest.raises(ConfigError, match="x_train is uint8\\[10000, 28, 28\\]"):
        load_fashion_mnist(tmp_path, system_dir=None, url=None)


def test_subset_is_reproducible(dataset: Dataset) -> None:
    a, b = dataset.subset(500, 100, seed=1), dataset.subset(500, 100, seed=1)
    assert a.x_train.shape == (500, 784) and a.y_test.shape == (100,)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_train, dataset.subset(500, 100, seed=2).y_train)
