"""The REST API over a real controller state (SQLite in a temp folder), without processes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from stratafl import errors
from stratafl.controller.rest import models as rest_models
from stratafl.controller.rest.app import HTTP_STATUS, create_api
from stratafl.modelfile.codec import params_to_bytes
from stratafl.records import ClientOutcome, RoundRecord, Validation
from stratafl.restapi.schema import ErrorBody
from stratafl.security.policy import REST_ROLES
from stratafl.status import OutcomeStatus, RoundStatus
from tests.support.asgi import SyncASGI
from tests.support.controllers import open_controller


@pytest.fixture
def controller(tmp_path):
    with open_controller(tmp_path) as controller:
        yield controller


@pytest.fixture
def api(controller):
    client = SyncASGI(create_api(controller))
    yield client
    client.close()


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
    trail = api.get(f"/api/v1/models/{model['id']}/trail").json()
    assert [m["id"] for m in trail["items"]] == [model["id"]] and trail["next"] is None


def test_a_malformed_model_upload_is_refused_and_leaves_nothing(api):
    response = api.post("/api/v1/models", content=b"\x05\0\0\0\0\0\0\0nope!")
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]
    assert api.get("/api/v1/models").json() == {"items": [], "next": None}


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


def test_a_second_session_while_one_runs_is_400_and_names_the_wait(api, controller):
    seed = api.post("/api/v1/models", content=_model_body({"w": np.ones(3, np.float32)}))
    assert seed.status_code == 201, seed.text
    waiting = {"rounds": 1, "wait_for_clients_seconds": 3600}  # no combiner: it waits
    first = api.post("/api/v1/sessions", json=waiting)
    assert first.status_code == 201, first.text
    second = api.post("/api/v1/sessions", json=waiting)
    running = first.json()["id"]
    detail = _error(second, 400, "StrataError")
    assert detail.startswith(f"session {running} is already running")
    assert f"strata session stop {running}" in detail  # the command that ends it
    assert [s.id for s in controller.store.sessions()] == [running]
    cancelled = api.post(f"/api/v1/sessions/{running[:4]}/cancel")  # a prefix will do
    assert cancelled.json()["status"] == "cancelled"


def test_assign_without_combiners_is_503_and_names_the_fix(api):
    response = api.post("/api/v1/assign", json={"client_id": "c0"})
    assert response.status_code == 503
    assert "strata combiner start" in response.json()["detail"]


def test_a_truncated_model_upload_is_refused_and_leaves_nothing(api):
    body = _model_body({"w": np.arange(10, dtype=np.float32)})
    response = api.post("/api/v1/models", content=body[:-4])
    assert response.status_code == 422
    assert "send the whole file" in response.json()["detail"]
    assert api.get("/api/v1/models").json() == {"items": [], "next": None}


def _untyped(schema: dict) -> bool:
    """True for a schema that says nothing: ``{}`` or an object without declared fields."""
    if schema.get("type") == "array":
        return _untyped(schema.get("items", {}))
    if "$ref" in schema or schema.get("format") == "binary":
        return False
    return schema.get("type") in (None, "object") and "properties" not in schema


def test_openapi_declares_every_answer(api):
    spec = api.get("/openapi.json").json()
    operations = [
        (f"{method.upper()} {path}", operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) == len(REST_ROLES)  # each declared, none forgotten
    error_ref = "#/components/schemas/ErrorBody"
    for name, operation in operations:
        responses = operation["responses"]
        success = [code for code in ("200", "201") if code in responses]
        assert len(success) == 1, name
        (schema,) = [body["schema"] for body in responses[success[0]]["content"].values()]
        assert not _untyped(schema), (name, schema)
        failures = {code: body for code, body in responses.items() if code >= "400"}
        assert {"422", "500"} <= set(failures), name
        for code, body in failures.items():
            schema = body["content"]["application/json"]["schema"]
            assert schema == {"$ref": error_ref}, (name, code)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    upload = spec["paths"]["/api/v1/models"]["post"]
    assert "application/octet-stream" in upload["requestBody"]["content"]


def _error(response: httpx.Response, status: int, error: str) -> str:
    """The one-line detail of an ErrorBody answer, after checking its status and class."""
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}
    body = ErrorBody.model_validate(response.json())
    assert body.error == error
    assert body.detail and "\n" not in body.detail and "Traceback" not in body.detail
    return body.detail


def test_a_seed_with_a_nan_or_an_infinity_is_refused(api):
    before = api.get("/api/v1/models").json()["items"]
    for bad in (np.nan, np.inf):
        params = {"w": np.ones(4, np.float32), "b": np.array([1.0, bad], np.float32)}
        refused = api.post("/api/v1/models", content=params_to_bytes(params))
        assert "tensor 'b' holds NaN or infinite values" in _error(refused, 422, "ModelFormatError")
    assert api.get("/api/v1/models").json()["items"] == before


def test_no_api_browser_pages_load_scripts_from_a_cdn(api):
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        answer = api.get(page)
        assert answer.status_code == 404, page
        assert "cdn" not in answer.text.lower()
    assert api.get("/openapi.json").json()["openapi"]  # the schema itself runs nothing


def test_every_kind_of_error_answers_with_an_error_body(api):
    invalid = api.post("/api/v1/sessions", json={"rounds": 0, "roundz": 3})
    assert _error(invalid, 422, "ValidationError") == (
        "body.rounds: Input should be greater than or equal to 1; "
        "body.roundz: Extra inputs are not permitted"
    )
    assert "GET /api/v1/sessions" in _error(api.get("/api/v1/sessions/nope"), 404, "NotFoundError")
    unknown = _error(api.get("/api/v1/nope"), 404, "HTTPError")
    assert "/api/v1/nope" in unknown and "/openapi.json" in unknown
    wrong_method = api.request("DELETE", "/api/v1/sessions")
    assert "DELETE /api/v1/sessions" in _error(wrong_method, 405, "HTTPError")
    assert wrong_method.headers["allow"]  # the exception's headers are kept
    assert _error(api.post("/api/v1/assign", json={}), 422, "ValidationError").startswith(
        "body.client_id: Field required"
    )


def test_an_unexpected_error_is_a_500_error_body_and_a_logged_traceback(
    api, controller, monkeypatch, caplog
):
    def broken(*args: object) -> list:
        raise RuntimeError("the database went away\nsecond line")

    monkeypatch.setattr(controller.store, "sessions_page", broken)
    with caplog.at_level(logging.ERROR, logger="stratafl.controller.rest.app"):
        detail = _error(api.get("/api/v1/sessions"), 500, "InternalError")
    assert "RuntimeError" in detail and "GET /api/v1/sessions" in detail
    assert "the database went away" not in detail
    (logged,) = [r for r in caplog.records if r.name == "stratafl.controller.rest.app"]
    assert logged.exc_info is not None and "the database went away" in caplog.text
    assert api.get("/api/v1/health").json() == {"status": "ok"}  # the app still answers


def test_the_events_limit_is_bounded(api, controller):
    for i in range(3):
        controller.store.add_event("kind", "test", f"event {i}")
    first = api.get("/api/v1/events", params={"limit": 2}).json()
    assert [e["message"] for e in first["items"]] == ["event 0", "event 1"]
    rest = api.get("/api/v1/events", params={"limit": 2, "after": first["next"]}).json()
    assert [e["message"] for e in rest["items"]] == ["event 2"] and rest["next"] is None
    assert len(api.get("/api/v1/events").json()["items"]) == 3
    for limit in (0, 1001, 100000):
        detail = _error(api.get("/api/v1/events", params={"limit": limit}), 422, "ValidationError")
        assert detail.startswith("query.limit: ")


def test_rounds_are_served_as_round_records_with_their_validation_means(api, controller):
    controller.store.create_session("s", {"rounds": 1}, "seed")
    record = RoundRecord(
        session_id="s",
        number=1,
        status=RoundStatus.FINISHED,
        model_in="seed",
        model_out="m1",
        started_at=1.0,
        duration=0.5,
        participants=["c1"],
        outcomes=[ClientOutcome(client_id="c1", status=OutcomeStatus.OK, metrics={"loss": 0.2})],
        validation=Validation(clients=1, per_client={"c1": {"accuracy": 0.9}}, accuracy=0.9),
    )
    controller.store.add_round(record)
    (served,) = api.get("/api/v1/sessions/s/rounds").json()["items"]
    assert served["validation"]["accuracy"] == 0.9
    assert RoundRecord.model_validate(served) == record
    session = api.get("/api/v1/sessions/s").json()
    assert (session["status"], session["final_model_id"]) == ("running", "seed")
    assert _error(api.get("/api/v1/sessions/nope/rounds"), 404, "NotFoundError")


def test_an_upload_is_written_checked_and_published_off_the_event_loop(
    api, controller, monkeypatch
):
    loop_thread = threading.get_ident()  # SyncASGI runs the event loop in this thread
    threads: dict[str, int] = {}

    def spy(name, function):
        def wrapper(*args, **kwargs):
            threads[name] = threading.get_ident()
            return function(*args, **kwargs)

        return wrapper

    class SpyFile:
        def __init__(self, stream) -> None:
            self._stream = stream
            self.write = spy("write", stream.write)
            self.close = spy("close", stream.close)

    class SpyPath(type(Path())):
        def open(self, *args, **kwargs):
            return SpyFile(spy("open", super().open)(*args, **kwargs))

    staging_path = spy("staging", controller.trail.staging_path)
    monkeypatch.setattr(controller.trail, "staging_path", lambda name: SpyPath(staging_path(name)))
    monkeypatch.setattr(
        controller.trail, "publish_file", spy("publish", controller.trail.publish_file)
    )
    monkeypatch.setattr(rest_models, "check_model_file", spy("check", rest_models.check_model_file))
    created = api.post("/api/v1/models", content=_model_body({"w": np.ones(3, dtype=np.float32)}))
    assert created.status_code == 201
    assert set(threads) == {"staging", "open", "write", "close", "check", "publish"}
    assert loop_thread not in threads.values()
    assert [m["id"] for m in api.get("/api/v1/models").json()["items"]] == [created.json()["id"]]
    assert list((controller.workdir / "staging").iterdir()) == []  # the staged file is gone


def test_a_multi_line_error_message_is_answered_on_one_line(api, controller, monkeypatch):
    def missing(session_id: str) -> None:
        raise errors.NotFoundError(f"session {session_id!r} is gone;\n    start a new one")

    monkeypatch.setattr(controller.store, "session", missing)
    detail = _error(api.get("/api/v1/sessions/s"), 404, "NotFoundError")
    assert detail == "session 's' is gone; start a new one"
