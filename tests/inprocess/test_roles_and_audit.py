"""The read-only and metrics-only roles, the audit log of admin actions, and ids taken by
unique prefix, on a real secured controller's REST app (and a combiner's metrics port)."""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter

from stratafl.controller.rest.app import create_api
from stratafl.controller.wiring import Controller
from stratafl.modelfile.codec import params_to_bytes
from stratafl.observe.metrics_server import MetricsServer
from stratafl.records import AuditAction
from stratafl.restapi.schema import ErrorBody
from stratafl.security import Role
from stratafl.security.policy import REST_ROLES
from tests.support.asgi import SyncASGI
from tests.support.controllers import open_controller
from tests.support.rest_ids import url_of

DAY = 24 * 3600.0


@pytest.fixture
def controller(tmp_path):
    with open_controller(tmp_path, secure=True) as controller:
        yield controller


@pytest.fixture
def api(controller):
    client = SyncASGI(create_api(controller))
    yield client
    client.close()


def _bearer(controller: Controller, role: Role, subject: str) -> dict[str, str]:
    assert controller.trust is not None
    token, _ = controller.trust.issue(
        controller.store, name=subject, subject=subject, role=role, ttl_seconds=DAY
    )
    return {"Authorization": f"Bearer {token}"}


def _detail(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error == error and "\n" not in body.detail
    return body.detail


def _operations(api: SyncASGI) -> list[tuple[str, str]]:
    spec = api.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def test_a_viewer_reads_what_an_admin_reads_and_a_metrics_token_only_scrapes(api, controller):
    """Every write refuses a viewer with one line naming the admin role; every admin read
    admits it; a metrics token gets /metrics and a 403 everywhere else."""
    controller.events.close()  # an admitted event stream answers 503 instead of never ending
    viewer = _bearer(controller, Role.VIEWER, "vera")
    scraper = _bearer(controller, Role.METRICS, "prometheus")
    admin = _bearer(controller, Role.ADMIN, "alice")
    writes = reads = 0
    for method, template in _operations(api):
        if not REST_ROLES[(method, template)]:
            continue  # public: the health check and the dashboard's files
        url = url_of(template)  # ids that name nothing, not even by prefix
        where = f"{method} {template}"
        as_scraper = api.request(method, url, headers=scraper)
        if template == "/metrics":
            assert as_scraper.status_code == 200
        else:
            detail = _detail(as_scraper, 403, "PermissionDenied")
            assert f"a metrics token may not call {where}" in detail
        as_admin = api.request(method, url, headers=admin)
        if as_admin.status_code in (401, 403) or template == "/api/v1/tokens/renew":
            continue  # a tier's operation, or renewal: viewers are issued anew instead
        as_viewer = api.request(method, url, headers=viewer)
        if method == "GET":
            assert as_viewer.status_code not in (401, 403), (where, as_viewer.text)
            reads += 1
        else:
            detail = _detail(as_viewer, 403, "PermissionDenied")
            assert f"a viewer token may not call {where}; it needs an admin token" in detail
            writes += 1
    assert writes >= 7 and reads >= 14  # sessions, models, tokens, audit: all walked


def test_a_combiners_metrics_port_admits_a_metrics_token(controller):
    """The combiner's own /metrics checks the same row: a metrics token scrapes it, a
    client's token cannot."""
    trust = controller.trust
    assert trust is not None
    identity = trust.authority.issue("combiner-0", ["127.0.0.1"])
    registry = CollectorRegistry()
    Counter("strata_test_scrapes", "scrapes", registry=registry).inc()
    scraper = _bearer(controller, Role.METRICS, "prometheus")
    client = _bearer(controller, Role.CLIENT, "c1")

    async def scrape() -> tuple[httpx.Response, httpx.Response]:
        server = MetricsServer(registry, verify=trust.verify, identity=lambda: identity)
        port = await server.start("127.0.0.1", 0)
        tls = ssl.create_default_context(cadata=trust.authority.ca_pem.decode())
        try:
            async with httpx.AsyncClient(verify=tls) as http:
                url = f"https://127.0.0.1:{port}/metrics"
                return await http.get(url, headers=scraper), await http.get(url, headers=client)
        finally:
            await server.close()

    admitted, refused = asyncio.run(scrape())
    assert admitted.status_code == 200 and "strata_test_scrapes_total 1.0" in admitted.text
    assert refused.status_code == 403 and "metrics" in refused.json()["detail"]


def test_admin_actions_are_audited_with_who_and_when_and_viewers_may_read_them(api, controller):
    alice = _bearer(controller, Role.ADMIN, "alice")
    started_at = time.time()
    issued = api.post("/api/v1/tokens", json={"name": "bob", "role": "viewer"}, headers=alice)
    assert issued.status_code == 201, issued.text
    bob_id = issued.json()["record"]["token_id"]
    model = params_to_bytes({"w": np.ones(3, np.float32)})
    seed = api.post("/api/v1/models", content=model, headers=alice).json()["id"]
    waiting = {"rounds": 1, "wait_for_clients_seconds": 3600}  # no combiner: it waits
    session = api.post("/api/v1/sessions", json=waiting, headers=alice).json()["id"]
    assert api.post(f"/api/v1/sessions/{session}/stop", headers=alice).status_code == 200
    assert api.post(f"/api/v1/sessions/{session}/cancel", headers=alice).status_code == 200
    revoked = api.request("DELETE", f"/api/v1/tokens/{bob_id[:10]}", headers=alice)  # a prefix
    assert revoked.json()["revoked_at"] is not None

    viewer = _bearer(controller, Role.VIEWER, "vera")
    first = api.get("/api/v1/audit", params={"limit": 4}, headers=viewer).json()
    rest = api.get("/api/v1/audit", params={"after": first["next"]}, headers=viewer).json()
    assert rest["next"] is None
    log = first["items"] + rest["items"]
    assert [(a["actor"], a["action"], a["target"]) for a in log] == [
        ("alice", AuditAction.TOKEN_ISSUED, bob_id),
        ("alice", AuditAction.MODEL_UPLOADED, seed),
        ("alice", AuditAction.SESSION_STARTED, session),
        ("alice", AuditAction.SESSION_STOPPED, session),
        ("alice", AuditAction.SESSION_CANCELLED, session),
        ("alice", AuditAction.TOKEN_REVOKED, bob_id),
    ]
    assert log[0]["detail"] == {"role": "viewer", "name": "bob", "subject": "bob"}
    assert started_at <= log[0]["time"] <= log[-1]["time"] <= time.time()
    scraper = _bearer(controller, Role.METRICS, "prometheus")
    assert api.get("/api/v1/audit", headers=scraper).status_code == 403
    refused = api.post("/api/v1/sessions", json=waiting, headers=viewer)  # refused: no entry
    _detail(refused, 403, "PermissionDenied")
    assert len(controller.store.audit_page(limit=100).items) == len(log)


def test_ids_are_taken_by_a_unique_prefix_and_an_ambiguous_one_lists_the_candidates(
    api, controller
):
    admin = _bearer(controller, Role.ADMIN, "alice")
    store = controller.store
    for model_id in ("abc123", "abc456", "abd789"):
        store.add_model(
            model_id,
            parent_id=None,
            session_id=None,
            round_number=None,
            size_bytes=12,
            num_parameters=3,
        )
    store.create_session("5e55100aa", {"rounds": 1}, "abc123")
    store.add_event("note", "test", "of the session", session_id="5e55100aa")

    assert api.get("/api/v1/models/abc1", headers=admin).json()["id"] == "abc123"
    assert api.get("/api/v1/models/abd…", headers=admin).json()["id"] == "abd789"  # pasted cut
    trail = api.get("/api/v1/models/abc4/trail", headers=admin).json()["items"]
    assert [m["id"] for m in trail] == ["abc456"]
    ambiguous = _detail(api.get("/api/v1/models/ab", headers=admin), 422, "ConfigError")
    assert "'ab' is the start of 3 models (abc123, abc456, abd789)" in ambiguous
    assert "give more of the id" in ambiguous
    missing = _detail(api.get("/api/v1/models/ABC1", headers=admin), 404, "NotFoundError")
    assert "strata model list" in missing  # ids are exact: no case-blind match

    assert api.get("/api/v1/sessions/5e5", headers=admin).json()["id"] == "5e55100aa"
    events = api.get("/api/v1/events", params={"session_id": "5e5"}, headers=admin).json()
    assert [e["message"] for e in events["items"]] == ["of the session"]
    rounds = api.get("/api/v1/sessions/5e5/rounds", headers=admin)
    assert rounds.status_code == 200 and rounds.json()["items"] == []
