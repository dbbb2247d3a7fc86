"""Audiences, tickets, certificate hosts, lifetimes, renewal, leeway and request rates:
what keeps a credential useful only where it was meant (issue 19)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stratafl.combiner.enrolment import Enrolment, ServingTrust
from stratafl.controller.rest.rates import RateLimiter, RateLimits
from stratafl.controller.trust import ADMIN_TOKEN_SECONDS, MEMBER_TOKEN_SECONDS, Trust
from stratafl.errors import AuthError, ConfigError, Conflict, PermissionDenied, RateLimited
from stratafl.security import Role, TokenSigner, TokenVerifier, certificate_request
from stratafl.security.claims import b64encode
from stratafl.security.renewal import keep_renewed_token, renewal_due, seconds_to_renewal
from stratafl.store.state import StateStore
from stratafl.store.tables import sqlite_url
from stratafl.transport.credentials import INSECURE

NOW = 1_800_000_000.0


@pytest.fixture
def trust(tmp_path: Path) -> Trust:
    return Trust.load_or_create(tmp_path / "trust", ["127.0.0.1", "ctl.example.org"])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(sqlite_url(tmp_path))
    store.open()
    try:
        yield store
    finally:
        store.close()


def _serving(trust: Trust, combiner_id: str) -> ServingTrust:
    identity = trust.authority.issue(combiner_id, ["127.0.0.1"])
    enrolment = Enrolment(
        combiner_id=combiner_id,
        grpc_address="127.0.0.1:1",
        dialing=INSECURE,
        identity=identity,
        token_key_pem=trust.signer.public_key_pem.decode(),
        ca_pem=trust.authority.ca_pem.decode(),
    )
    return ServingTrust(enrolment)


def _signed(key: Ed25519PrivateKey, claims: dict[str, object]) -> str:
    payload = b64encode(json.dumps(claims).encode())
    signature = key.sign(f"st1.{payload}".encode())
    return f"st1.{payload}.{b64encode(signature)}"


def test_a_token_issued_before_audiences_reads_as_one_for_the_controller():
    key = Ed25519PrivateKey.generate()
    old = {
        "token_id": "A" * 22,
        "subject": "hospital-1",
        "role": "client",
        "issued_at": NOW,
        "expires_at": NOW + 600,
        "max_examples": None,
    }
    verifier = TokenVerifier(TokenSigner(key).public_key_pem, clock=lambda: NOW)
    claims = verifier.verify(_signed(key, old))
    assert (claims.audience, claims.hosts) == ("controller", ())
    with pytest.raises(AuthError, match="unexpected fields"):
        verifier.verify(_signed(key, {**old, "scope": "everything"}))
    with pytest.raises(AuthError, match="hosts"):
        verifier.verify(_signed(key, {**old, "hosts": "ctl.example.org"}))


def test_the_leeway_is_a_few_seconds():
    signer = TokenSigner.generate()
    token, _ = signer.issue("c", Role.CLIENT, 60, now=NOW)
    assert TokenVerifier(signer.public_key_pem, clock=lambda: NOW + 64).verify(token)
    with pytest.raises(AuthError, match="expired"):
        TokenVerifier(signer.public_key_pem, clock=lambda: NOW + 66).verify(token)
    with pytest.raises(AuthError, match="future"):
        TokenVerifier(signer.public_key_pem, clock=lambda: NOW - 6).verify(token)


def test_a_ticket_is_for_its_combiner_alone(trust: Trust, db: StateStore):
    token, record = trust.issue(db, name="h1", subject="h1", role=Role.CLIENT, max_examples=70)
    caller = trust.verify(token)
    ticket = trust.ticket(caller, "combiner-1")
    claims = trust.verifier.verify(ticket)
    assert (claims.subject, claims.role, claims.audience) == ("h1", Role.CLIENT, "combiner-1")
    assert (claims.token_id, claims.max_examples) == (record.token_id, 70)
    assert claims.expires_at - claims.issued_at <= 3600
    with pytest.raises(AuthError, match="ticket for combiner 'combiner-1'"):
        trust.verify(ticket)  # the controller refuses tickets
    assert _serving(trust, "combiner-1").verify(ticket).subject == "h1"
    with pytest.raises(AuthError, match="not combiner 'combiner-2'"):
        _serving(trust, "combiner-2").verify(ticket)
    with pytest.raises(AuthError, match="ticket"):
        _serving(trust, "combiner-1").verify(token)  # the client's own token
    controller = trust.start(db)
    assert _serving(trust, "combiner-2").verify(controller).role == Role.CONTROLLER
    combiner = _serving(trust, "combiner-1")
    combiner.set_revoked([record.token_id])  # revoking the client's token revokes its ticket
    with pytest.raises(AuthError, match="revoked"):
        combiner.verify(ticket)


def test_default_lifetimes_are_short(trust: Trust, db: StateStore):
    for role, seconds in (
        (Role.CLIENT, MEMBER_TOKEN_SECONDS),
        (Role.COMBINER, MEMBER_TOKEN_SECONDS),
        (Role.ADMIN, ADMIN_TOKEN_SECONDS),
    ):
        _, record = trust.issue(db, name=role.value, subject=role.value, role=role)
        assert record.expires_at - record.issued_at == seconds
    assert MEMBER_TOKEN_SECONDS == 24 * 3600 and ADMIN_TOKEN_SECONDS == 30 * 24 * 3600


def test_a_renewed_token_keeps_its_id_and_claims(trust: Trust, db: StateStore):
    token, record = trust.issue(
        db, name="edge", subject="edge", role=Role.COMBINER, ttl_seconds=600, hosts=["127.0.0.1"]
    )
    before = trust.verify(token)
    renewed, renewed_record = trust.renew(db, before)
    after = trust.verify(renewed)
    assert (after.token_id, after.subject, after.role, after.hosts) == (
        record.token_id,
        "edge",
        Role.COMBINER,
        ("127.0.0.1",),
    )
    assert after.expires_at - after.issued_at == 600
    assert renewed_record.expires_at == after.expires_at >= before.expires_at
    trust.revoke(db, record.token_id)
    with pytest.raises(AuthError, match="revoked"):
        trust.verify(renewed)  # one id: revoking it refuses every copy
    with pytest.raises(AuthError, match="revoked"):
        trust.renew(db, after)


def test_the_last_live_admin_token_cannot_be_revoked(trust: Trust, db: StateStore):
    _, first = trust.issue(db, name="a", subject="a", role=Role.ADMIN)
    with pytest.raises(Conflict, match="strata token create --role admin"):
        trust.revoke(db, first.token_id)
    _, second = trust.issue(db, name="b", subject="b", role=Role.ADMIN)
    assert trust.revoke(db, first.token_id).revoked_at is not None
    with pytest.raises(Conflict, match="last admin token"):
        trust.revoke(db, second.token_id)


def test_certificates_name_only_the_hosts_the_token_allows(trust: Trust, db: StateStore):
    with pytest.raises(ConfigError, match="controller's own names"):
        trust.issue(db, name="e", subject="e", role=Role.COMBINER, hosts=["ctl.example.org"])
    with pytest.raises(ConfigError, match="wildcard"):
        trust.issue(db, name="e", subject="e", role=Role.COMBINER, hosts=["*.example.org"])
    with pytest.raises(ConfigError, match="only a combiner"):
        trust.issue(db, name="c", subject="c", role=Role.CLIENT, hosts=["10.0.0.9"])
    token, _ = trust.issue(
        db, name="e", subject="e", role=Role.COMBINER, hosts=["127.0.0.1", "Edge.Example.org"]
    )
    caller = trust.verify(token)
    csr, _ = certificate_request("e", [])
    assert trust.sign_certificate(csr, caller, ["edge.example.org", "127.0.0.1"])
    with pytest.raises(PermissionDenied, match="not other.example.org"):
        trust.sign_certificate(csr, caller, ["127.0.0.1", "other.example.org"])


def test_renewal_is_due_halfway_through_a_tokens_life():
    token, _ = TokenSigner.generate().issue("c", Role.CLIENT, 1000, now=NOW)
    assert not renewal_due(token, now=NOW + 499)
    assert renewal_due(token, now=NOW + 500)
    assert seconds_to_renewal(token, now=NOW + 100) == 400
    assert seconds_to_renewal(token, now=NOW + 900) == 1.0  # overdue: soon, not at once
    assert not renewal_due("not a token")


def test_each_caller_has_its_own_bucket():
    now = [0.0]
    limiter = RateLimiter(RateLimits(per_second=2, burst=3), clock=lambda: now[0])
    for _ in range(3):
        limiter.take("client a")
    with pytest.raises(RateLimited) as held:
        limiter.take("client a")
    assert held.value.retry_after == pytest.approx(0.5)
    limiter.take("client b")  # another identity is not held by a's flood
    now[0] += 0.5
    limiter.take("client a")  # one request's worth came back
    with pytest.raises(RateLimited, match="client a sends more than 2 requests a second"):
        limiter.take("client a")
    with pytest.raises(ConfigError):
        RateLimits(per_second=0)


def test_a_renewed_token_is_written_back_or_kept_in_memory_with_one_warning(tmp_path, caplog):
    token_file = tmp_path / "client.token"
    token_file.write_text("old\n")
    assert keep_renewed_token(token_file, "fresh") and token_file.read_text() == "fresh\n"
    assert token_file.stat().st_mode & 0o777 == 0o600
    # a read-only secret mount cannot be replaced: as unwritable here, a file for a folder
    unwritable = token_file / "token"
    with caplog.at_level("WARNING"):
        assert not keep_renewed_token(unwritable, "fresher")
    assert "a restart reads the old one" in caplog.text and str(unwritable) in caplog.text
