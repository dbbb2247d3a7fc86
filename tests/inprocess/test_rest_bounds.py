"""Everything a peer sends to the REST API is bounded: each hostile input is a 4xx with an
ErrorBody naming the problem, never a 500, and leaves nothing behind."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from stratafl.controller.rest.app import create_api
from stratafl.controller.rest.bounds import MAX_JSON_BYTES
from stratafl.errors import ConfigError
from stratafl.modelfile.codec import params_to_bytes
from stratafl.params import TensorSpec
from stratafl.restapi.schema import ErrorBody
from stratafl.security import Role, certificate_request
from tests.support.asgi import SyncASGI
from tests.support.controllers import open_controller

UPLOAD_LIMIT = 3 << 20  # over a 2 MiB header, far under the default


@pytest.fixture
def controller(tmp_path):
    with open_controller(tmp_path) as controller:
        yield controller


@pytest.fixture
def api(controller):
    """An --insecure controller (callers are anonymous admins), uploads up to UPLOAD_LIMIT."""
    client = SyncASGI(create_api(controller, max_upload_bytes=UPLOAD_LIMIT))
    yield client
    client.close()


@pytest.fixture
def secure(tmp_path):
    """A controller with a real trust root, and an admin's and a client's headers."""
    with open_controller(tmp_path, secure=True) as controller:
        assert controller.trust is not None
        headers = {}
        for role in (Role.ADMIN, Role.CLIENT):
            token, _ = controller.trust.issue(
                controller.store, name=role, subject=role, role=role, ttl_seconds=3600
            )
            headers[role] = {"Authorization": f"Bearer {token}"}
        client = SyncASGI(create_api(controller))
        yield client, headers
        client.close()


def _error(response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error == error and body.detail and "\n" not in body.detail
    return body.detail


def _json(api, url: str, text: str, **kwargs):
    """POST a raw JSON text (NaN and Infinity are not JSON, but Python's parser takes them)."""
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return api.post(url, content=text.encode(), headers=headers, **kwargs)


# -- session configs -------------------------------------------------------------------

LARGEST_AND_TOO_MUCH = {
    "rounds": (100_000, 100_001),
    "min_clients": (100_000, 100_001),
    "clients_per_round": (100_000, 100_001),
    "round_timeout": (86_400, 86_401),
    "wait_for_clients_seconds": (3600, 3601),
    "local_epochs": (1000, 1001),
    "batch_size": (1_000_000, 1_000_001),
    "learning_rate": (1000, 1001),
    "proximal_mu": (1e6, 1e6 + 1),
    "aggregator": ("fedavg" + " " * 250, "fedavg" + " " * 251),
    "seed": (2**43, 2**63),
    "seed_model_id": ("m" * 128, "m" * 129),
    "max_examples_per_client": (2**53, 2**53 + 1),
    "max_model_bytes": (2**62, 2**62 + 1),
}


@pytest.mark.parametrize("field", LARGEST_AND_TOO_MUCH)
def test_every_session_setting_has_an_upper_bound(api, field):
    body = {field: LARGEST_AND_TOO_MUCH[field][1]}
    detail = _error(api.post("/api/v1/sessions", json=body), 422, "ValidationError")
    assert detail.startswith(f"body.{field}: ")


def test_the_bounds_leave_the_largest_valid_session_alone(api):
    largest = {field: values[0] for field, values in LARGEST_AND_TOO_MUCH.items()}
    answer = api.post("/api/v1/sessions", json=largest)  # valid, but no such model
    assert "m" * 128 in _error(answer, 404, "NotFoundError")


@pytest.mark.parametrize(
    "body",
    [
        {"min_clients": 1000, "wait_for_clients_seconds": 1e9},
        {"seed": -1},
        {"max_examples_per_client": 0},
        {"max_model_bytes": 0},
        {"rounds": 1.5},
    ],
)
def test_hostile_session_configs_are_422(api, body):
    _error(api.post("/api/v1/sessions", json=body), 422, "ValidationError")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("field", ["learning_rate", "round_timeout", "proximal_mu", "rounds"])
def test_nan_and_infinity_are_refused_in_a_json_body(api, field, number):
    response = _json(api, "/api/v1/sessions", f'{{"{field}": {number}}}')
    detail = _error(response, 422, "ValidationError")
    assert detail == f"body.{field}: Input should be a finite number"  # not "less than..."


def test_nan_in_a_token_request_or_an_assignment_is_refused(secure):
    api, headers = secure
    text = '{"name": "x", "role": "client", "ttl_seconds": NaN}'
    token = _json(api, "/api/v1/tokens", text, headers=headers[Role.ADMIN])
    assert _error(token, 422, "ValidationError").endswith("should be a finite number")
    assign = _json(api, "/api/v1/assign", '{"client_id": Infinity}', headers=headers[Role.CLIENT])
    _error(assign, 422, "ValidationError")


def test_a_json_body_over_the_limit_is_413(api):
    body = json.dumps({"aggregator": "x" * MAX_JSON_BYTES})
    detail = _error(_json(api, "/api/v1/sessions", body), 413, "BodyTooLarge")
    assert str(MAX_JSON_BYTES) in detail


def test_deeply_nested_json_is_a_4xx(api):
    response = _json(api, "/api/v1/sessions", "[" * 200_000)
    assert 400 <= response.status_code < 500
    ErrorBody.model_validate(response.json())


# -- tokens, certificates, assignments -------------------------------------------------


TOKEN = "/api/v1/tokens"
CERTIFICATE = "/api/v1/certificates"
CSR = certificate_request("c", [])[0].decode()
HOSTILE_TRUST_REQUESTS = [
    (TOKEN, {"name": "x", "role": "controller"}, 422, "ValidationError"),
    (TOKEN, {"name": "x", "role": "root"}, 422, "ValidationError"),
    (TOKEN, {"name": "", "role": "client"}, 422, "ValidationError"),
    (TOKEN, {"name": "x" * 257, "role": "client"}, 422, "ValidationError"),
    (TOKEN, {"name": "x", "role": "client", "subject": "s" * 257}, 422, "ValidationError"),
    (TOKEN, {"name": "x", "role": "client", "subject": "a\x00b"}, 422, "ConfigError"),
    (TOKEN, {"name": "x", "role": "client", "ttl_seconds": 0}, 422, "ValidationError"),
    (TOKEN, {"name": "x", "role": "client", "ttl_seconds": 2e8}, 422, "ValidationError"),
    (TOKEN, {"name": "x", "role": "client", "max_examples": 0}, 422, "ValidationError"),
    (TOKEN, {"name": "x", "role": "client", "max_examples": 2**53 + 1}, 422, "ValidationError"),
    (TOKEN, {"name": "x", "role": "client", "token": "mine"}, 422, "ValidationError"),
    (CERTIFICATE, {"csr_pem": "x" * (16 * 1024 + 1)}, 422, "ValidationError"),
    (CERTIFICATE, {"csr_pem": CSR, "hosts": [f"h{i}" for i in range(9)]}, 422, "ValidationError"),
    (CERTIFICATE, {"csr_pem": CSR, "hosts": ["h" * 254]}, 422, "ValidationError"),
    (CERTIFICATE, {"csr_pem": CSR, "hosts": [""]}, 422, "ValidationError"),
    (CERTIFICATE, {"csr_pem": "not a certificate request"}, 422, "ConfigError"),
    (CERTIFICATE, {"csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nü\n"}, 422, "ConfigError"),
    (CERTIFICATE, {"csr_pem": CSR, "hosts": ["10.0.0.1"]}, 403, "PermissionDenied"),  # a client
]


@pytest.mark.parametrize(("url", "body", "status", "error"), HOSTILE_TRUST_REQUESTS)
def test_hostile_token_and_certificate_requests_are_refused(secure, url, body, status, error):
    api, headers = secure
    role = Role.ADMIN if url == TOKEN else Role.CLIENT
    _error(api.post(url, json=body, headers=headers[role]), status, error)
    assert len(api.get(TOKEN, headers=headers[Role.ADMIN]).json()) == 2  # no new token


@pytest.mark.parametrize("field", ["client_id", "failed_combiner", "preferred_combiner"])
def test_assignment_ids_are_bounded(api, field):
    body = {"client_id": "c1", field: "x" * 257}
    _error(api.post("/api/v1/assign", json=body), 422, "ValidationError")


# -- model uploads ---------------------------------------------------------------------


def _model(header: dict | str, data: bytes = b"") -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _f32(shape: list, offsets: list) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


HOSTILE_MODELS = {
    "huge shape": _model({"w": _f32([10**30], [0, 4 * 10**30])}),
    "shape that wraps int64 to 0 bytes": _model({"w": _f32([2**32, 2**32], [0, 0])}),
    "negative dimensions": _model({"w": _f32([-2, -2], [0, 16])}, bytes(16)),
    "boolean dimension": _model({"w": _f32([True], [0, 4])}, bytes(4)),
    "fractional offset": _model({"w": _f32([1], [0, 4.0])}, bytes(4)),
    "metadata not an object": _model({"__metadata__": ["a"], "w": _f32([1], [0, 4])}, bytes(4)),
    "metadata not strings": _model({"__metadata__": {"a": 1}, "w": _f32([1], [0, 4])}, bytes(4)),
    "2 MiB header": _model({"w": _f32([1], [0, 4]), "pad": "x" * (2 << 20)}, bytes(4)),
    "header longer than the file": struct.pack("<Q", 64) + b"{}",
    "0-byte model": b"",
    "no tensors": _model({}),
    "only empty tensors": _model({"w": _f32([0], [0, 0]), "v": _f32([0, 5], [0, 0])}),
    "duplicate offsets": _model({"a": _f32([1], [0, 4]), "b": _f32([1], [0, 4])}, bytes(4)),
    "overlapping offsets": _model({"a": _f32([2], [0, 8]), "b": _f32([2], [4, 12])}, bytes(12)),
    "reversed offsets": _model({"a": _f32([2], [8, 0])}, bytes(8)),
    "a gap": _model({"a": _f32([1], [0, 4]), "b": _f32([1], [8, 12])}, bytes(12)),
    "not from byte 0": _model({"a": _f32([1], [4, 8])}, bytes(8)),
    "duplicate names": _model(
        '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
        '"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
        bytes(4),
    ),
    "unknown dtype": _model({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}),
    "dtype not a string": _model({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}),
    "extra field": _model({"w": _f32([1], [0, 4]) | {"code": "import os"}}, bytes(4)),
    "too many dimensions": _model({"w": _f32([1] * 33, [0, 4])}, bytes(4)),
    "nested too deeply": _model("[" * 100_000),
    "header not an object": _model("[1, 2]"),
    "data shorter than announced": _model({"w": _f32([4], [0, 16])}, bytes(8)),
}


@pytest.mark.parametrize("body", HOSTILE_MODELS.values(), ids=list(HOSTILE_MODELS))
def test_hostile_model_uploads_are_422_and_leave_nothing(api, controller, body):
    _error(api.post("/api/v1/models", content=body), 422, "ModelFormatError")
    assert api.get("/api/v1/models").json()["items"] == []
    assert list((controller.workdir / "staging").iterdir()) == []


def test_a_valid_model_still_uploads(api):
    params = {"w": np.ones((2, 3), np.float32), "empty": np.zeros(0, np.float64)}
    assert api.post("/api/v1/models", content=params_to_bytes(params)).status_code == 201


def test_tensor_sizes_are_python_ints_that_cannot_wrap():
    spec = TensorSpec("w", "F32", (2**32, 2**32))
    assert (spec.size, spec.nbytes) == (2**64, 2**66)


def _counted(chunks: int, sent: list[int]):
    """A streamed body of ``chunks`` chunks of 64 KiB, noting each chunk as it is read."""

    async def body():
        for _ in range(chunks):
            sent.append(1 << 16)
            yield bytes(1 << 16)

    return body()


def test_an_upload_over_the_limit_is_413_before_it_is_all_read(api, controller):
    sent: list[int] = []
    response = api.post("/api/v1/models", content=_counted(1000, sent))  # 64 MiB
    assert str(UPLOAD_LIMIT) in _error(response, 413, "BodyTooLarge")
    assert sum(sent) <= UPLOAD_LIMIT + (1 << 16)
    assert list((controller.workdir / "staging").iterdir()) == []


def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read(api):
    sent: list[int] = []
    headers = {"content-length": str(UPLOAD_LIMIT + 1)}
    response = api.post("/api/v1/models", content=_counted(1, sent), headers=headers)
    assert f"({UPLOAD_LIMIT + 1} bytes)" in _error(response, 413, "BodyTooLarge")
    assert sent == []


def test_the_upload_limit_is_at_most_the_controllers(controller):
    with pytest.raises(ConfigError, match="max_upload_bytes"):
        create_api(controller, max_upload_bytes=2**40)


LISTS = "combiners clients models sessions sessions/s0/rounds tokens models/m0/trail events".split()


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9, "many"])
def test_every_list_limit_is_bounded(api, controller, path, limit):
    controller.store.create_session("s0", {"rounds": 1}, "m0")
    response = api.get(f"/api/v1/{path}", params={"limit": limit})
    assert _error(response, 422, "ValidationError").startswith("query.limit: ")


def test_a_list_answers_at_most_its_limit(api, controller):
    for i in range(3):
        controller.store.create_session(f"s{i}", {"rounds": 1}, "m0")
    listed = api.get("/api/v1/sessions", params={"limit": 2}).json()
    assert [session["id"] for session in listed["items"]] == ["s0", "s1"]
    assert len(api.get("/api/v1/sessions").json()["items"]) == 3
