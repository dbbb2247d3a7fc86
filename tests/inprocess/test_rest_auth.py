"""Every REST operation refuses a missing, wrong-role, expired or revoked token; identities
come from tokens; the role table and the OpenAPI document list the same operations."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from stratafl.controller.rest.app import create_api
from stratafl.controller.rest.rates import RateLimits
from stratafl.controller.trust import Trust
from stratafl.controller.wiring import Controller
from stratafl.modelfile.codec import params_to_bytes
from stratafl.restapi.schema import ErrorBody
from stratafl.security import Role, certificate_request
from stratafl.security.policy import REST_ROLES
from stratafl.security.receipts import decode_key
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


@pytest.fixture
def insecure(tmp_path):
    """A controller started --insecure, beside the secure one."""
    with open_controller(tmp_path / "insecure") as controller:
        yield controller


@pytest.fixture
def insecure_api(insecure):
    client = SyncASGI(create_api(insecure))
    yield client
    client.close()


def _token(
    controller: Controller, role: Role, subject: str | None = None, hosts: tuple[str, ...] = ()
) -> str:
    assert controller.trust is not None
    token, _ = controller.trust.issue(
        controller.store,
        name=f"test {role}",
        subject=subject or role.value,
        role=role,
        ttl_seconds=DAY,
        hosts=hosts,
    )
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = ErrorBody.model_validate(response.json())
    assert body.error == error and body.detail and "\n" not in body.detail
    return body.detail


def _operations(api: SyncASGI) -> list[tuple[str, str]]:
    spec = api.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


def test_the_role_table_and_the_openapi_document_list_the_same_operations(api):
    assert set(_operations(api)) == set(REST_ROLES)


def test_every_operation_refuses_what_it_must_and_admits_its_roles(api, controller):
    """The walk: for every operation in /openapi.json, each kind of bad credential."""
    controller.events.close()  # an admitted event stream answers 503 instead of never ending
    tokens = {role: _token(controller, role) for role in Role}
    assert controller.trust is not None
    expired, _ = controller.trust.signer.issue("old", Role.ADMIN, 60, now=time.time() - DAY)
    revoked = {role: _token(controller, role, f"revoked-{role}") for role in Role}
    for token in revoked.values():
        claims = controller.trust.verify(token)
        controller.trust.revoke(controller.store, claims.token_id)
    walked = 0
    for method, template in _operations(api):
        url, allowed, name = (
            url_of(template),
            REST_ROLES[(method, template)],
            f"{method} {template}",
        )
        anonymous = api.request(method, url)
        if not allowed:
            assert anonymous.status_code not in (401, 403), name
            continue
        detail = _error(anonymous, 401, "AuthError")
        assert "Authorization: Bearer" in detail, name
        assert anonymous.headers["www-authenticate"].startswith("Bearer"), name
        for role in set(Role) - allowed:
            denied = api.request(method, url, headers=_bearer(tokens[role]))
            detail = _error(denied, 403, "PermissionDenied")
            assert f"{role} token may not call {name}; it needs " in detail
        for role in allowed:
            admitted = api.request(method, url, headers=_bearer(tokens[role]))
            assert admitted.status_code not in (401, 403), (name, role, admitted.text)
            stale = api.request(method, url, headers=_bearer(revoked[role]))
            assert "revoked" in _error(stale, 401, "AuthError"), name
        old = api.request(method, url, headers=_bearer(expired))
        assert "expired" in _error(old, 401, "AuthError"), name
        walked += 1
    assert walked == len([roles for roles in REST_ROLES.values() if roles])


@pytest.mark.parametrize(
    "header",
    ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "st1.AAAA.BBBB", "Bearer st1.AAAA.BBBB"],
)
def test_malformed_authorization_headers_are_401(api, header):
    response = api.get("/api/v1/sessions", headers={"Authorization": header})
    _error(response, 401, "AuthError")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_of_another_federation_is_401(api, tmp_path):
    other = Trust.load_or_create(tmp_path / "other", ["127.0.0.1"])
    token, _ = other.signer.issue("admin", Role.ADMIN, DAY)
    detail = _error(api.get("/api/v1/sessions", headers=_bearer(token)), 401, "AuthError")
    assert "another federation" in detail


def _with_a_forgotten_route(controller: Controller) -> SyncASGI:
    """The app with a route added after it was built, one the role table does not list."""
    app = create_api(controller)

    @app.get("/api/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {"open": "by accident"}

    return SyncASGI(app)


def test_a_route_missing_from_the_table_is_refused_even_to_an_admin(controller, insecure):
    api = _with_a_forgotten_route(controller)
    try:
        response = api.get("/api/v1/forgotten", headers=_bearer(_token(controller, Role.ADMIN)))
        assert "REST_ROLES" in _error(response, 403, "PermissionDenied")
        assert ("GET", "/api/v1/forgotten") in set(_operations(api)) - set(REST_ROLES)
    finally:
        api.close()
    api = _with_a_forgotten_route(insecure)  # --insecure: still closed
    try:
        assert api.get("/api/v1/forgotten").status_code == 403
    finally:
        api.close()


def test_openapi_declares_the_bearer_scheme_and_who_may_call(api):
    spec = api.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    for method, template in _operations(api):
        operation = spec["paths"][template][method.lower()]
        if REST_ROLES[(method, template)]:
            assert operation["security"] == [{"bearer": []}]
            assert {"401", "403"} <= set(operation["responses"])
            assert operation["description"].startswith("Callers: ")
        else:
            assert operation["security"] == []


def test_a_client_is_assigned_under_its_tokens_subject_only(api, controller):
    asyncio.run(controller.discovery.register("k1", "127.0.0.1:7001", 10))
    c1 = _bearer(_token(controller, Role.CLIENT, "c1"))
    other = api.post("/api/v1/assign", json={"client_id": "c2"}, headers=c1)
    assert "'c1', not 'c2'" in _error(other, 403, "PermissionDenied")
    assert api.post("/api/v1/assign", json={}, headers=c1).json()["combiner_id"] == "k1"
    assigned = api.post("/api/v1/assign", json={"client_id": "c1"}, headers=c1)
    assert assigned.status_code == 200
    assert [c.id for c in controller.store.clients()] == ["c1"]
    # the receipt key of the token's subject, and no one else's
    key = decode_key(assigned.json()["receipt_key"])
    assert key == controller.receipts.key_for("c1") != controller.receipts.key_for("c2")


def test_an_insecure_controller_takes_the_client_id_from_the_body(insecure_api, insecure):
    api = insecure_api
    insecure.events.close()  # an event stream answers 503 instead of never ending
    asyncio.run(insecure.discovery.register("k1", "127.0.0.1:7001", 10))
    assigned = api.post("/api/v1/assign", json={"client_id": "c7"})
    assert assigned.status_code == 200
    assert [c.id for c in insecure.store.clients()] == ["c7"]
    assert decode_key(assigned.json()["receipt_key"]) == insecure.receipts.key_for("c7")
    detail = _error(api.post("/api/v1/assign", json={}), 422, "ValidationError")
    assert detail.startswith("body.client_id: Field required when the controller runs --insecure")
    for method, template in _operations(api):  # no token needed anywhere
        assert api.request(method, url_of(template)).status_code not in (401, 403), template


def test_discovery_hands_out_the_token_key_and_the_ca(api, controller, insecure_api):
    assert controller.trust is not None
    info = api.get("/api/v1/discovery", headers=_bearer(_token(controller, Role.COMBINER)))
    assert info.json() == {
        "grpc_address": "127.0.0.1:1",
        "token_public_key_pem": controller.trust.signer.public_key_pem.decode(),
        "ca_pem": controller.trust.authority.ca_pem.decode(),
    }
    insecure = insecure_api.get("/api/v1/discovery").json()
    assert (insecure["token_public_key_pem"], insecure["ca_pem"]) == ("", "")


def test_tokens_are_shown_once_listed_by_record_and_revoked(api, controller):
    admin = _bearer(_token(controller, Role.ADMIN))
    created = api.post(
        "/api/v1/tokens",
        json={"name": "hospital-3", "role": "client", "max_examples": 500},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    token, record = created.json()["token"], created.json()["record"]
    assert (record["subject"], record["role"], record["max_examples"]) == (
        "hospital-3",
        "client",
        500,
    )
    assert record["expires_at"] - record["issued_at"] == DAY  # a client's default: it renews
    listed = api.get("/api/v1/tokens", headers=admin)
    assert record in listed.json()["items"] and token not in listed.text
    asyncio.run(controller.discovery.register("k1", "127.0.0.1:7001", 10))
    assert api.post("/api/v1/assign", json={}, headers=_bearer(token)).status_code == 200
    revoked = api.request("DELETE", f"/api/v1/tokens/{record['token_id']}", headers=admin)
    assert revoked.json()["revoked_at"] is not None
    assert api.post("/api/v1/assign", json={}, headers=_bearer(token)).status_code == 401


def _common_name(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_a_certificate_is_named_after_the_token_and_only_a_combiner_gets_hosts(api, controller):
    csr, _ = certificate_request("i-claim-to-be-the-controller", ["evil.example.org"])
    allowed = ("127.0.0.1", "combiner-1.example.org")
    combiner = _bearer(_token(controller, Role.COMBINER, "combiner-1", allowed))
    body = {"csr_pem": csr.decode(), "hosts": list(allowed)}
    signed = api.post("/api/v1/certificates", json=body, headers=combiner)
    assert signed.status_code == 200, signed.text
    assert _common_name(signed.json()["certificate_pem"]) == "combiner-1"
    cert = x509.load_pem_x509_certificate(signed.json()["certificate_pem"].encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["combiner-1.example.org"]
    client = _bearer(_token(controller, Role.CLIENT, "c1"))
    refused = api.post("/api/v1/certificates", json=body, headers=client)
    assert "send hosts: []" in _error(refused, 403, "PermissionDenied")
    plain = api.post("/api/v1/certificates", json={"csr_pem": csr.decode()}, headers=client)
    assert _common_name(plain.json()["certificate_pem"]) == "c1"


def test_stop_and_cancel_record_who_asked(api, controller):
    admin = _bearer(_token(controller, Role.ADMIN, "operator-ann"))
    model = {"w": np.ones(3, dtype=np.float32)}
    assert api.post("/api/v1/models", content=params_to_bytes(model), headers=admin).is_success
    config = {"rounds": 3, "wait_for_clients_seconds": 3600}
    session = api.post("/api/v1/sessions", json=config, headers=admin).json()
    stopping = api.post(f"/api/v1/sessions/{session['id']}/stop", headers=admin)
    assert stopping.json()["status"] == "running"  # it ends after the round in flight
    cancelled = api.post(f"/api/v1/sessions/{session['id']}/cancel", headers=admin).json()
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "cancelled by operator-ann")
    again = api.post(f"/api/v1/sessions/{session['id']}/cancel", headers=admin)
    assert "not running" in _error(again, 409, "RoundFailed")


def test_assign_hands_out_a_ticket_the_controller_itself_refuses(api, controller):
    asyncio.run(controller.discovery.register("k1", "127.0.0.1:7001", 10))
    token = _token(controller, Role.CLIENT, "c1")
    assigned = api.post("/api/v1/assign", json={}, headers=_bearer(token))
    assert assigned.status_code == 200, assigned.text
    ticket = assigned.json()["ticket"]
    assert controller.trust is not None
    claims = controller.trust.verifier.verify(ticket)
    assert (claims.subject, claims.audience) == ("c1", "k1")
    for method, path in (("POST", "/api/v1/assign"), ("POST", "/api/v1/tokens/renew")):
        refused = api.request(method, path, json={}, headers=_bearer(ticket))
        assert "ticket for combiner 'k1'" in _error(refused, 401, "AuthError")


def test_a_tier_renews_its_own_token_and_no_other(api, controller):
    token = _token(controller, Role.COMBINER, "edge", ("127.0.0.1",))
    renewed = api.post("/api/v1/tokens/renew", headers=_bearer(token))
    assert renewed.status_code == 200, renewed.text
    assert controller.trust is not None
    before, after = (controller.trust.verify(t) for t in (token, renewed.json()["token"]))
    assert (after.token_id, after.subject, after.hosts) == (before.token_id, "edge", before.hosts)
    assert renewed.json()["record"]["expires_at"] == after.expires_at


def test_the_last_admin_token_is_not_revoked(api, controller):
    admin = _token(controller, Role.ADMIN, "ann")
    assert controller.trust is not None
    token_id = controller.trust.verify(admin).token_id
    refused = api.request("DELETE", f"/api/v1/tokens/{token_id}", headers=_bearer(admin))
    assert "create another first" in _error(refused, 409, "Conflict")


def test_one_identity_is_held_to_its_rate_and_others_are_not(controller):
    api = SyncASGI(create_api(controller, rate_limits=RateLimits(per_second=0.01, burst=3)))
    try:
        flood = _bearer(_token(controller, Role.COMBINER, "flood"))
        for _ in range(3):
            assert api.get("/api/v1/discovery", headers=flood).status_code == 200
        held = api.get("/api/v1/discovery", headers=flood)
        assert "combiner flood sends more than" in _error(held, 429, "RateLimited")
        assert int(held.headers["retry-after"]) >= 1
        other = _bearer(_token(controller, Role.COMBINER, "calm"))
        assert api.get("/api/v1/discovery", headers=other).status_code == 200
    finally:
        api.close()


def test_a_ticket_is_renewed_where_the_client_is_held_and_nowhere_else(api, controller):
    asyncio.run(controller.discovery.register("k1", "127.0.0.1:7001", 10))
    asyncio.run(controller.discovery.register("k2", "127.0.0.1:7002", 10))
    client = _bearer(_token(controller, Role.CLIENT, "c1"))
    first = api.post("/api/v1/assign", json={}, headers=client).json()["combiner_id"]
    stay = api.post("/api/v1/assign", json={"current_combiner": first}, headers=client).json()
    assert stay["combiner_id"] == first and stay["ticket"]
    assert "c1" not in controller.discovery._combiners[first].pinned  # still movable
    # naming a combiner the client is not held at is no way around the controller's choice
    elsewhere = api.post("/api/v1/assign", json={"current_combiner": "k9"}, headers=client)
    assert elsewhere.json()["combiner_id"] in {"k1", "k2"}
    assert controller.trust is not None
    assert controller.trust.verifier.verify(elsewhere.json()["ticket"]).audience != "k9"
