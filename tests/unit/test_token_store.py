"""The controller's record of issued tokens, on every backend: SQLite (the embedded
default) and the real PostgreSQL on 127.0.0.1:5432 (see tests/conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from stratafl.errors import AuthError, ConfigError, NotFoundError
from stratafl.records import TokenRecord
from stratafl.security import Role, TokenSigner
from stratafl.store.state import StateStore
from stratafl.store.tokens import REVOCATION_GRACE_SECONDS

NOW = 1_800_000_000.0
SIGNER = TokenSigner.generate()


def test_an_issued_token_is_recorded_by_its_claims(store: StateStore):
    token, claims = SIGNER.issue("client-3", Role.CLIENT, 600, max_examples=5 * 2**31, now=NOW)
    record = store.add_token(claims, "hospital-3")
    assert record == TokenRecord(
        token_id=claims.token_id,
        name="hospital-3",
        subject="client-3",
        role="client",
        issued_at=NOW,
        expires_at=NOW + 600,
        max_examples=5 * 2**31,  # caps beyond 32 bits survive every backend
        revoked_at=None,
    )
    assert store.token(claims.token_id) == record
    assert store.tokens() == [record]


def test_the_store_never_holds_the_token_itself(store: StateStore):
    token, claims = SIGNER.issue("alice", Role.ADMIN, 600, now=NOW)
    store.add_token(claims, "alice's laptop")
    engine = create_engine(store.url)
    try:
        with engine.connect() as db:
            rows = [tuple(row) for row in db.execute(text("SELECT * FROM tokens"))]
    finally:
        engine.dispose()
    assert len(rows) == 1
    cells = " ".join(str(cell) for cell in rows[0])
    assert claims.token_id in cells
    assert token not in cells and token.split(".")[2] not in cells  # nor its signature


def test_tokens_are_listed_oldest_first_and_survive_a_restart(store: StateStore):
    later = store.add_token(SIGNER.issue("b", Role.COMBINER, 60, now=NOW + 1)[1], "b")
    earlier = store.add_token(SIGNER.issue("a", Role.CLIENT, 60, now=NOW)[1], "a")
    assert store.tokens() == [earlier, later]
    store.revoke_token(later.token_id)
    reopened = StateStore(store.url).open()
    try:
        assert [t.token_id for t in reopened.tokens()] == [earlier.token_id, later.token_id]
        assert reopened.token(later.token_id).revoked_at is not None
    finally:
        reopened.close()


def test_revoking_is_idempotent(store: StateStore):
    _, claims = SIGNER.issue("client-1", Role.CLIENT, 600)
    store.add_token(claims, "c1")
    first = store.revoke_token(claims.token_id)
    assert first.revoked_at is not None
    again = store.revoke_token(claims.token_id)
    assert again == first  # the first revocation time is kept
    assert store.token(claims.token_id) == first


def test_revoked_ids_are_those_still_worth_refusing(store: StateStore):
    def add(name: str, issued_at: float, ttl: float, revoke: bool) -> str:
        _, claims = SIGNER.issue(name, Role.CLIENT, ttl, now=issued_at)
        store.add_token(claims, name)
        if revoke:
            store.revoke_token(claims.token_id)
        return claims.token_id

    live_revoked = add("live-revoked", NOW - 10, 3600, True)
    just_expired = add("just-expired", NOW - 100, 90, True)  # expired 10 s ago
    add("long-expired", NOW - 10_000, 60, True)
    add("live", NOW - 10, 3600, False)
    assert store.revoked_token_ids(now=NOW) == sorted([live_revoked, just_expired])
    assert store.revoked_token_ids(now=NOW, grace_seconds=0) == [live_revoked]
    assert store.revoked_token_ids(now=NOW + REVOCATION_GRACE_SECONDS + 3600) == []


def test_a_verifier_fed_from_the_store_refuses_revoked_tokens(store: StateStore):
    token, claims = SIGNER.issue("combiner-1", Role.COMBINER, 600)
    other, _ = SIGNER.issue("combiner-2", Role.COMBINER, 600)
    store.add_token(claims, "combiner-1")
    verifier = SIGNER.verifier()
    assert verifier.verify(token) == claims
    store.revoke_token(claims.token_id)
    verifier.set_revoked(store.revoked_token_ids())
    with pytest.raises(AuthError, match="revoked"):
        verifier.verify(token)
    assert verifier.verify(other).subject == "combiner-2"


def test_unknown_ids_name_the_command_that_lists_tokens(store: StateStore):
    with pytest.raises(NotFoundError, match="never issued here.*strata token list"):
        store.token("nope")
    with pytest.raises(NotFoundError, match="strata token list"):
        store.revoke_token("nope")
    token, _ = SIGNER.issue("c", Role.CLIENT, 60)
    with pytest.raises(NotFoundError, match="not a token id") as caught:
        store.revoke_token(token)  # a token pasted where its id belongs is never echoed
    assert token not in str(caught.value) and token.split(".")[1] not in str(caught.value)


def test_a_token_is_recorded_once_with_a_bounded_name(store: StateStore):
    _, claims = SIGNER.issue("c", Role.CLIENT, 60)
    store.add_token(claims, "c")
    with pytest.raises(ConfigError, match="already recorded"):
        store.add_token(claims, "again")
    _, other = SIGNER.issue("d", Role.CLIENT, 60)
    with pytest.raises(ConfigError, match="at most 256"):
        store.add_token(other, "x" * 257)
    assert [t.name for t in store.tokens()] == ["c"]
