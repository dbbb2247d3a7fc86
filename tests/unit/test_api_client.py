"""`ControllerClient` against a fake transport: requests, parsed records, every error mapped."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from stratafl import errors
from stratafl.modelfile.codec import params_to_bytes
from stratafl.records import RoundRecord
from stratafl.restapi import Assignment, ControllerClient, Session
from stratafl.restapi.client import ERRORS
from stratafl.security import CertificateAuthority
from stratafl.settings import SessionConfig

URL = "http://controller:8080"

DOMAIN_ERRORS = sorted(
    (
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.StrataError)
    ),
    key=lambda cls: cls.__name__,
)

ROUND = {
    "session_id": "s1",
    "number": 1,
    "status": "finished",
    "model_in": "m0",
    "model_out": "m1",
    "started_at": 1.0,
    "duration": 0.5,
    "participants": ["c0"],
    "outcomes": [{"client_id": "c0", "combiner_id": "k0", "status": "ok", "num_examples": 10}],
    "validation": {"clients": 1, "accuracy": 0.75, "per_client": {"c0": {"accuracy": 0.75}}},
    "traffic": {"clients_up": 40},
}
SESSION = {
    "id": "s1",
    "config": {"rounds": 1},
    "status": "running",
    "seed_model_id": "m0",
    "created_at": 1.0,
}


def _client(handler) -> ControllerClient:
    return ControllerClient(URL, transport=httpx.MockTransport(handler))


def _answering(status: int, body: object) -> ControllerClient:
    return _client(lambda request: httpx.Response(status, json=body))


@pytest.mark.parametrize("error", DOMAIN_ERRORS, ids=lambda cls: cls.__name__)
def test_every_domain_error_comes_back_as_itself_with_the_servers_detail(error):
    api = _answering(400, {"error": error.__name__, "detail": "model m9 does not exist"})
    with pytest.raises(errors.StrataError) as raised:
        api.model("m9")
    assert type(raised.value) is error
    assert str(raised.value) == "model m9 does not exist"


def test_the_error_table_covers_every_domain_error():
    assert set(DOMAIN_ERRORS) <= set(ERRORS.values())
    assert all(ERRORS[cls.__name__] is cls for cls in DOMAIN_ERRORS)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ValidationError", errors.ConfigError),
        ("HTTPError", errors.StrataError),
        ("InternalError", errors.StrataError),
        ("SomethingNew", errors.StrataError),
    ],
)
def test_other_error_names_map_to_config_error_or_the_root(name, expected):
    api = _answering(422, {"error": name, "detail": "rounds: must be >= 1"})
    with pytest.raises(errors.StrataError, match="rounds: must be >= 1") as raised:
        api.sessions()
    assert type(raised.value) is expected


def test_an_error_without_an_error_body_names_the_request_and_status():
    api = _client(lambda request: httpx.Response(500, text="<html>boom</html>"))
    with pytest.raises(errors.StrataError, match=r"GET /api/v1/sessions failed with HTTP 500"):
        api.sessions()
    gateway = _client(lambda request: httpx.Response(502, text="bad gateway"))
    with pytest.raises(errors.UnavailableError, match="HTTP 502"):
        gateway.health()


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out")],
    ids=["refused", "timeout"],
)
def test_an_unreachable_controller_is_unavailable_and_says_what_to_start(failure):
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(errors.UnavailableError) as raised:
        _client(handler).health()
    message = str(raised.value)
    assert message.startswith(f"cannot reach the controller at {URL}: ")
    assert "is `strata controller start` running?" in message
    assert raised.value.__cause__ is failure


def test_a_url_without_a_scheme_is_a_config_error():
    with pytest.raises(errors.ConfigError, match="must start with http:// or https://"):
        ControllerClient("127.0.0.1:8080")


def test_an_answer_that_is_not_the_record_says_so():
    api = _answering(200, {"items": [{"id": "s1"}], "next": None})
    with pytest.raises(errors.StrataError, match="GET /sessions with a body stratafl cannot"):
        api.sessions()


def test_requests_go_to_the_paths_of_the_api_and_come_back_typed():
    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.read()))
        path = request.url.path
        if path == "/api/v1/assign":
            return httpx.Response(200, json={"combiner_id": "k0", "address": "127.0.0.1:1"})
        if path == "/api/v1/sessions" and request.method == "POST":
            return httpx.Response(201, json=SESSION)
        if path == "/api/v1/sessions/s1/rounds":
            return httpx.Response(200, json={"items": [ROUND], "next": None})
        return httpx.Response(200, json={"items": [], "next": None})

    with _client(handler) as api:
        assert api.assign("c0", failed_combiner="k9") == Assignment(
            combiner_id="k0", address="127.0.0.1:1"
        )
        session = api.start_session(SessionConfig(rounds=1))
        (record,) = api.rounds("s1")
        assert api.models(session_id="s1") == [] and api.events(limit=5) == []
    assert isinstance(session, Session) and session.status == "running"
    assert session.config == SessionConfig(rounds=1)  # typed: the settings, not a dict
    assert isinstance(record, RoundRecord) and record.validation.mean("accuracy") == 0.75
    assert record.outcomes[0].status == "ok" and record.traffic.clients_up == 40
    assert [(method, url) for method, url, _ in seen] == [
        ("POST", f"{URL}/api/v1/assign"),
        ("POST", f"{URL}/api/v1/sessions"),
        ("GET", f"{URL}/api/v1/sessions/s1/rounds?limit=1000"),
        ("GET", f"{URL}/api/v1/models?session_id=s1&limit=1000"),
        ("GET", f"{URL}/api/v1/events?limit=5"),
    ]
    assert json.loads(seen[0][2]) == {"client_id": "c0", "failed_combiner": "k9"}
    assert json.loads(seen[1][2]) == SessionConfig(rounds=1).model_dump(mode="json")


def test_a_model_goes_up_as_safetensors_and_comes_down_through_a_renamed_file(tmp_path):
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.float64)}
    stored: dict[str, bytes] = {}
    record = {"id": "m1", "size_bytes": 1, "num_parameters": 8, "created_at": 1.0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            stored["m1"] = request.read()
            return httpx.Response(201, json=record)
        if request.url.path == "/api/v1/models/m1/download":
            return httpx.Response(200, content=stored["m1"])
        return httpx.Response(404, json={"error": "NotFoundError", "detail": "no model m2"})

    with _client(handler) as api:
        assert api.upload_model(params).id == "m1"
        assert stored["m1"] == params_to_bytes(params)
        path = api.download_model("m1", tmp_path / "final.safetensors")
        assert path.read_bytes() == stored["m1"]
        fetched = api.download_params("m1")
        with pytest.raises(errors.NotFoundError, match="no model m2"):
            api.download_model("m2", tmp_path / "missing.safetensors")
        file = tmp_path / "seed.safetensors"
        file.write_bytes(params_to_bytes(params))
        assert api.upload_model_file(file).id == "m1"
    for name, array in params.items():
        np.testing.assert_array_equal(fetched[name], array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.safetensors", "seed.safetensors"]


def test_an_id_stays_one_path_segment():
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"error": "NotFoundError", "detail": "no such model"})

    with pytest.raises(errors.NotFoundError):
        _client(handler).trail("../sessions?x=1")
    assert paths == ["/api/v1/models/..%2Fsessions%3Fx%3D1/trail?limit=1000"]


TOKEN_RECORD = {
    "token_id": "t1",
    "name": "hospital-3",
    "subject": "hospital-3",
    "role": "client",
    "issued_at": 1.0,
    "expires_at": 2.0,
}


def test_the_token_goes_in_the_authorization_header_of_every_request():
    headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"status": "ok"})

    with ControllerClient(
        URL, token=" st1.abc.def\n", transport=httpx.MockTransport(handler)
    ) as api:
        api.health()
    with _client(handler) as anonymous:
        anonymous.health()
    assert headers == ["Bearer st1.abc.def", None]
    for bad in ("", "two words", "line\nbreak", "naïve"):
        with pytest.raises(errors.ConfigError, match="exactly as `strata token create`"):
            ControllerClient(URL, token=bad)


def test_verify_takes_the_federations_ca_file(tmp_path):
    CertificateAuthority.load_or_create(tmp_path / "trust")
    ControllerClient("https://controller:8443", verify=tmp_path / "trust" / "ca.crt").close()
    ControllerClient("https://controller:8443", verify=False).close()
    with pytest.raises(errors.ConfigError, match="cannot load the CA certificate"):
        ControllerClient("https://controller:8443", verify=tmp_path / "missing.crt")


def test_the_new_operations_go_to_their_paths_and_come_back_typed():
    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.read()))
        path = request.url.path
        if path.endswith(("/stop", "/cancel")):
            return httpx.Response(200, json=SESSION)
        if path == "/api/v1/tokens" and request.method == "POST":
            return httpx.Response(201, json={"token": "st1.a.b", "record": TOKEN_RECORD})
        if path == "/api/v1/tokens/t1":
            return httpx.Response(200, json=TOKEN_RECORD | {"revoked_at": 3.0})
        if path == "/api/v1/certificates":
            return httpx.Response(200, json={"certificate_pem": "CERT", "ca_pem": "CA"})
        items = [TOKEN_RECORD] if path == "/api/v1/tokens" else []
        return httpx.Response(200, json={"items": items, "next": None})

    with _client(handler) as api:
        assert api.stop_session("s1").status == "running"
        assert api.cancel_session("s1").id == "s1"
        issued = api.create_token("hospital-3", "client", max_examples=500)
        assert (issued.token, issued.record.token_id) == ("st1.a.b", "t1")
        assert api.tokens(limit=5)[0].subject == "hospital-3"
        assert api.revoke_token("t1").revoked_at == 3.0
        assert api.request_certificate(b"CSR", ["10.0.0.1"]).ca_pem == "CA"
        assert api.sessions(limit=2) == [] and api.combiners(limit=3) == []
    assert [(method, url) for method, url, _ in seen] == [
        ("POST", f"{URL}/api/v1/sessions/s1/stop"),
        ("POST", f"{URL}/api/v1/sessions/s1/cancel"),
        ("POST", f"{URL}/api/v1/tokens"),
        ("GET", f"{URL}/api/v1/tokens?limit=5"),
        ("DELETE", f"{URL}/api/v1/tokens/t1"),
        ("POST", f"{URL}/api/v1/certificates"),
        ("GET", f"{URL}/api/v1/sessions?limit=2"),
        ("GET", f"{URL}/api/v1/combiners?limit=3"),
    ]
    body = json.loads(seen[2][2])
    assert body == {
        "name": "hospital-3",
        "role": "client",
        "subject": None,
        "ttl_seconds": None,
        "max_examples": 500,
        "hosts": [],
    }
    assert json.loads(seen[5][2]) == {"csr_pem": "CSR", "hosts": ["10.0.0.1"]}
