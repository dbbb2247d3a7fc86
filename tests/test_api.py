"""The REST API over a real controller state (SQLite in a temp folder), without processes."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from stratafl import errors
from stratafl.controller.api import HTTP_STATUS, create_api
from stratafl.controller.main import Controller
from stratafl.modelfile import params_to_bytes


class SyncASGI:
    """Drive the ASGI app in-process through httpx (one event loop for the whole test)."""

    def __init__(self, app) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://controller"
        )

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


@pytest.fixture
def api(tmp_path):
    controller = Controller(tmp_path)
    controller.store.open()
    controller.grpc_address = "127.0.0.1:1"
    client = SyncASGI(create_api(controller))
    yield client
    client.close()
    controller.store.close()


def _model_body(params):
    return params_to_bytes(params)


def test_every_domain_error_has_an_http_status():
    domain = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.StrataError)
    ]
    assert set(domain) == set(HTTP_STATUS)


def test_seed_model_upload_download_and_trail(api):
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    created = api.post("/api/v1/models", content=_model_body(params))
    assert created.status_code == 201
    model = created.json()
    assert model["num_parameters"] == 6 and model["parent_id"] is None
    assert api.get(f"/api/v1/models/{model['id']}/download").content == _model_body(params)
    assert [m["id"] for m in api.get(f"/api/v1/models/{model['id']}/trail").json()] == [model["id"]]


def test_a_malformed_model_upload_is_refused_and_leaves_nothing(api):
    response = api.post("/api/v1/models", content=b"\x05\0\0\0\0\0\0\0nope!")
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]
    assert api.get("/api/v1/models").json() == []


def test_unknown_ids_are_404_with_a_hint(api):
    response = api.get("/api/v1/sessions/nope")
    assert response.status_code == 404
    assert "GET /api/v1/sessions" in response.json()["detail"]
    assert api.get("/api/v1/models/nope").status_code == 404


def test_bad_session_configs_are_422_and_name_the_field(api):
    response = api.post("/api/v1/sessions", json={"rounds": 0})
    assert response.status_code == 422
    assert "rounds" in response.text
    assert api.post("/api/v1/sessions", json={"roundz": 3}).status_code == 422


def test_a_session_without_a_seed_model_says_how_to_make_one(api):
    response = api.post("/api/v1/sessions", json={"rounds": 1})
    assert response.status_code == 400
    assert "POST /api/v1/models" in response.json()["detail"]


def test_assign_without_combiners_is_503_and_names_the_fix(api):
    response = api.post("/api/v1/assign", json={"client_id": "c0"})
    assert response.status_code == 503
    assert "strata combiner start" in response.json()["detail"]


def test_a_truncated_model_upload_is_refused_and_leaves_nothing(api):
    body = _model_body({"w": np.arange(10, dtype=np.float32)})
    response = api.post("/api/v1/models", content=body[:-4])
    assert response.status_code == 422
    assert "send the whole file" in response.json()["detail"]
    assert api.get("/api/v1/models").json() == []
