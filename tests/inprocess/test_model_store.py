"""One contract for the model store, run against every backend: a local folder, ``memory://``
and S3 (a local moto server, reached through the ``AWS_*`` variables as a user would).

Both downloads the controller serves, REST and gRPC ``DownloadModel``, are part of the
contract: they stream from whatever store holds the models, never from a local path.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import grpc
import numpy as np
import pytest

from stratafl.controller.discovery import Discovery
from stratafl.controller.rest.app import create_api
from stratafl.controller.servicer import ControllerServicer
from stratafl.errors import ConfigError, NotFoundError
from stratafl.modelfile.codec import params_to_bytes, save_params
from stratafl.params import Params, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.store.models import ModelStore
from stratafl.store.state import StateStore
from stratafl.transport.streams import CHUNK_BYTES, receive_params, stream_chunks
from tests.support.asgi import SyncASGI
from tests.support.controllers import open_controller

PARAMS: Params = {
    "big": np.arange(1_200_000, dtype=np.float32),  # 4.8 MB: more than one 1 MiB chunk
    "bias": np.array([[1, -2], [3, -4]], dtype=np.int64),
}


@pytest.fixture(params=["folder", "memory", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "folder":
        yield str(tmp_path / "models")
    elif request.param == "memory":
        root = f"strata-{uuid.uuid4().hex[:12]}"
        yield f"memory://{root}/models"
        fsspec.filesystem("memory").rm(f"/{root}", recursive=True)  # a process-wide store
    else:
        yield request.getfixturevalue("s3_store")


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_params(path, PARAMS)
    return path


def test_a_model_put_in_the_store_reads_back_whole(store_url: str, model_file: Path) -> None:
    store = ModelStore(store_url)
    expected = model_file.read_bytes()
    store.put_file("m1", model_file)
    assert store.exists("m1")
    assert store.size("m1") == len(expected)
    with store.open("m1") as stream:
        assert stream.read() == expected


def test_a_stored_model_streams_in_chunks_of_at_most_1_mib(
    store_url: str, model_file: Path
) -> None:
    store = ModelStore(store_url)
    store.put_file("m1", model_file)
    specs, data = stream_chunks(store.open("m1"))
    chunks = list(data)
    assert specs == specs_of(PARAMS)
    raw = b"".join(np.ascontiguousarray(a).tobytes() for a in PARAMS.values())
    assert len(chunks) == -(-len(raw) // CHUNK_BYTES) == 5  # as few as 1 MiB allows
    assert all(len(chunk) <= CHUNK_BYTES for chunk in chunks)
    assert b"".join(chunks) == raw


def test_a_missing_model_is_not_found(store_url: str, model_file: Path) -> None:
    store = ModelStore(store_url)
    assert not store.exists("absent")
    with pytest.raises(NotFoundError, match="'absent' is not in the model store"):
        store.open("absent")
    store.put_file("m1", model_file)  # the store exists now; the model still does not
    with pytest.raises(NotFoundError, match="'absent' is not in the model store"):
        store.size("absent")
    for bad in ("", "../m1", "a/b", ".hidden"):
        with pytest.raises(NotFoundError, match="not a valid id"):
            store.open(bad)


def test_the_rest_download_streams_from_the_store(store_url: str, tmp_path: Path) -> None:
    workdir = tmp_path / "controller"
    workdir.mkdir()
    with open_controller(workdir, model_store=store_url) as controller:
        api = SyncASGI(create_api(controller))
        try:
            body = params_to_bytes(PARAMS)
            created = api.post("/api/v1/models", content=body)
            assert created.status_code == 201, created.text
            model_id = created.json()["id"]
            download = api.get(f"/api/v1/models/{model_id}/download")
            assert download.status_code == 200, download.text
            assert download.headers["content-length"] == str(len(body))
            assert download.content == body
            assert api.get("/api/v1/models/absent/download").status_code == 404
        finally:
            api.close()
    assert "://" not in store_url or not (workdir / "models").exists()  # nothing local


class Aborted(Exception):
    pass


class AbortingContext:
    """The part of a gRPC servicer context that `DownloadModel` uses."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


def _download(servicer: ControllerServicer, model_id: str) -> list[pb.ModelChunk]:
    async def collect() -> list[pb.ModelChunk]:
        request = pb.ModelRequest(model_id=model_id)
        return [m async for m in servicer.DownloadModel(request, AbortingContext())]  # type: ignore[arg-type]

    return asyncio.run(collect())


def test_the_grpc_download_streams_from_the_store(
    store_url: str, model_file: Path, tmp_path: Path
) -> None:
    store = ModelStore(store_url)
    store.put_file("m1", model_file)
    servicer = ControllerServicer(Discovery(StateStore("sqlite://")), store)
    messages = _download(servicer, "m1")
    assert all(m.ByteSize() <= CHUNK_BYTES + 16 for m in messages)
    header, params, _ = receive_params(iter(messages), "a download")
    assert header.model_id == "m1"
    assert set(params) == set(PARAMS)
    for name, array in PARAMS.items():
        np.testing.assert_array_equal(params[name], array)
    with pytest.raises(Aborted) as aborted:
        _download(servicer, "absent")
    assert aborted.value.args[0] == grpc.StatusCode.NOT_FOUND


def test_a_store_url_nobody_can_open_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="neither a folder nor an fsspec URL"):
        ModelStore("nope://bucket/models")
