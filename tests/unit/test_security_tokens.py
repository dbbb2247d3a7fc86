"""Signed bearer tokens: the format, every way a token is refused, and hostile input.

The format is checked with an independent decoder (plain base64 and Ed25519 from
`cryptography`), so a change to the wire format fails here, not in a deployed verifier.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.errors import AuthError, ConfigError
from stratafl.security import MAX_TOKEN_CHARS, Claims, Role, TokenSigner, TokenVerifier

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.generate()
SIGNER = TokenSigner(KEY)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed(body: Any, key: Ed25519PrivateKey = KEY) -> str:
    """A token with any JSON body, signed by ``key``: what a verifier sees if the signing
    side (or a key holder) ever sends something other than well-formed claims."""
    payload = b64(body if isinstance(body, bytes) else json.dumps(body).encode())
    return f"st1.{payload}.{b64(key.sign(f'st1.{payload}'.encode()))}"


def fixed_clock(now: float) -> TokenVerifier:
    return TokenVerifier(SIGNER.public_key_pem, clock=lambda: now)


def good_body(**changes: Any) -> dict[str, Any]:
    body = {
        "token_id": "A" * 22,
        "subject": "client-1",
        "role": "client",
        "issued_at": NOW,
        "expires_at": NOW + 60,
        "max_examples": None,
        "audience": "controller",
        "hosts": [],
    }
    return body | changes


def refused(verifier: TokenVerifier, token: str, match: str) -> AuthError:
    with pytest.raises(AuthError, match=match) as caught:
        verifier.verify(token)
    message = str(caught.value)
    assert "\n" not in message
    assert len(token) < 8 or token not in message
    for part in token.split(".")[1:]:
        assert len(part) < 8 or part not in message  # neither the claims nor the signature
    return caught.value


def test_a_token_round_trips_to_its_claims():
    token, claims = SIGNER.issue("client-7", Role.CLIENT, 3600, max_examples=5000, now=NOW)
    assert claims == Claims(claims.token_id, "client-7", Role.CLIENT, NOW, NOW + 3600, 5000)
    verified = fixed_clock(NOW + 10).verify(token)
    assert verified == claims and type(verified.issued_at) is float
    assert verified.role is Role.CLIENT
    assert re.fullmatch(r"st1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert len(token) < 400


def test_the_wire_format_is_st1_claims_signature():
    token, claims = SIGNER.issue("alice", Role.ADMIN, 60, now=NOW)
    version, payload, signature = token.split(".")
    public = serialization.load_pem_public_key(SIGNER.public_key_pem)
    assert isinstance(public, Ed25519PublicKey)
    public.verify(unb64(signature), f"st1.{payload}".encode())  # raises if it does not
    assert json.loads(unb64(payload)) == {
        "token_id": claims.token_id,
        "subject": "alice",
        "role": "admin",
        "issued_at": NOW,
        "expires_at": NOW + 60,
        "max_examples": None,
        "audience": "controller",
        "hosts": [],
    }


def test_token_ids_are_random_and_unique():
    ids = {SIGNER.issue("c", Role.CLIENT, 60)[1].token_id for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", token_id) for token_id in ids)


def test_a_role_given_as_text_is_accepted_and_typed():
    _, claims = SIGNER.issue("c", "combiner", 60)  # type: ignore[arg-type]
    assert claims.role is Role.COMBINER


def test_a_tampered_payload_is_refused():
    token, _ = SIGNER.issue("client-1", Role.CLIENT, 60, now=NOW)
    version, payload, signature = token.split(".")
    body = json.loads(unb64(payload)) | {"role": "admin"}
    forged = f"{version}.{b64(json.dumps(body).encode())}.{signature}"
    refused(fixed_clock(NOW), forged, "signature does not verify")


def test_a_tampered_signature_is_refused():
    token, _ = SIGNER.issue("client-1", Role.CLIENT, 60, now=NOW)
    version, payload, signature = token.split(".")
    raw = bytearray(unb64(signature))
    raw[10] ^= 1
    refused(fixed_clock(NOW), f"{version}.{payload}.{b64(bytes(raw))}", "signature does not")


def test_another_controllers_token_is_refused():
    token, _ = TokenSigner.generate().issue("client-1", Role.CLIENT, 60, now=NOW)
    refused(fixed_clock(NOW), token, "another federation's controller")


def test_a_second_spelling_of_the_same_signature_is_refused():
    """Base64 of 64 bytes leaves 4 spare bits; only the canonical spelling is a token."""
    token, _ = SIGNER.issue("client-1", Role.CLIENT, 60, now=NOW)
    head, last = token[:-1], token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    alias = alphabet[alphabet.index(last) ^ 1]
    assert unb64(token.split(".")[2]) == unb64((head + alias).split(".")[2])
    refused(fixed_clock(NOW), head + alias, "base64url")


@pytest.mark.parametrize(
    ("now", "leeway", "ok"),
    [
        (NOW + 60, 30.0, True),
        (NOW + 90, 30.0, True),  # within the leeway
        (NOW + 90.001, 30.0, False),
        (NOW + 60.001, 0.0, False),
        (NOW - 30, 30.0, True),  # a verifier whose clock is a little behind
        (NOW - 30.001, 30.0, False),
    ],
)
def test_expiry_and_leeway_follow_the_injected_clock(now: float, leeway: float, ok: bool):
    token, claims = SIGNER.issue("client-1", Role.CLIENT, 60, now=NOW)
    verifier = TokenVerifier(SIGNER.public_key_pem, clock=lambda: now, leeway_seconds=leeway)
    if ok:
        assert verifier.verify(token) == claims
    elif now > NOW:
        error = refused(verifier, token, "expired at 2027-01-15T08:01:00Z")
        assert "strata token create" in str(error)
    else:
        refused(verifier, token, "future; check the clocks")


def test_revoked_tokens_are_refused_and_the_set_is_replaced():
    token, claims = SIGNER.issue("client-1", Role.CLIENT, 60, now=NOW)
    other, _ = SIGNER.issue("client-2", Role.CLIENT, 60, now=NOW)
    verifier = TokenVerifier(SIGNER.public_key_pem, revoked=[claims.token_id], clock=lambda: NOW)
    error = refused(verifier, token, "was revoked")
    assert claims.token_id in str(error)  # the id is not a secret; it is what an admin revokes
    assert verifier.verify(other).subject == "client-2"
    verifier.set_revoked([])
    assert verifier.verify(token) == claims
    verifier.set_revoked(iter([claims.token_id]))
    refused(verifier, token, "was revoked")


def test_a_token_longer_than_the_bound_is_refused_unread():
    token, _ = SIGNER.issue("client-1", Role.CLIENT, 60, now=NOW)
    refused(fixed_clock(NOW), token + "A" * (MAX_TOKEN_CHARS - len(token) + 1), "longer than 4096")
    refused(fixed_clock(NOW), "st1." + "A" * 10**6 + ".AA", "longer than 4096")


@pytest.mark.parametrize(
    "token",
    ["", "st1", "st1..", "st2.e30.AA", "Bearer st1.e30.AA", "st1.e30.AA.AA", "st1.e3 0.AA"],
)
def test_malformed_tokens_are_refused(token: str):
    refused(fixed_clock(NOW), token, "malformed token")


def test_a_token_that_is_not_text_is_refused():
    with pytest.raises(AuthError, match="must be text"):
        fixed_clock(NOW).verify(b"st1.e30.AA")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (good_body(role="root"), "role"),
        (good_body(role=1), "role"),
        (good_body(issued_at=True), "issued_at"),
        (good_body(expires_at="soon"), "expires_at"),
        (good_body(expires_at=NOW - 1), "expires_at"),
        (good_body(expires_at=1e300), "expires_at"),
        (good_body(max_examples=0), "max_examples"),
        (good_body(max_examples=True), "max_examples"),
        (good_body(max_examples=1.5), "max_examples"),
        (good_body(subject=""), "subject"),
        (good_body(subject="x" * 257), "subject"),
        (good_body(subject="a\nb"), "subject"),
        (good_body(subject=["client-1"]), "subject"),
        (good_body(token_id="short"), "token_id"),
        (good_body(token_id="A" * 21 + "."), "token_id"),
        (good_body(extra=1), "unexpected fields"),
        ({k: v for k, v in good_body().items() if k != "max_examples"}, "unexpected fields"),
        ([good_body()], "unexpected fields"),
        (b'{"token_id": "AAAAAAAAAAAAAAAAAAAAAA", "token_id": "BBBBBBBBBBBBBBBBBBBBBB"}', "JSON"),
        (json.dumps(good_body()).replace("null", "NaN").encode(), "JSON"),
        (b"\xff\xfe not utf-8", "JSON"),
        (b"[" * 1400 + b"]" * 1400, "JSON"),  # deeper than Python's recursion limit
    ],
)
def test_signed_claims_with_wrong_fields_or_types_are_refused(body: Any, field: str):
    """Even a token signed with the right key must hold exactly the claims we issue."""
    refused(fixed_clock(NOW), signed(body), re.escape(field))


def test_well_formed_hand_signed_claims_are_accepted():
    claims = fixed_clock(NOW).verify(signed(good_body(issued_at=int(NOW), max_examples=10)))
    assert claims.issued_at == NOW and type(claims.issued_at) is float
    assert claims.max_examples == 10 and claims.role is Role.CLIENT


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=5000))
def test_verify_of_any_text_raises_only_auth_error(text: str):
    with pytest.raises(AuthError):
        fixed_clock(NOW).verify(text)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"st1\.[A-Za-z0-9_-]{0,300}\.[A-Za-z0-9_-]{0,100}", fullmatch=True))
def test_verify_of_token_shaped_text_raises_only_auth_error(text: str):
    with pytest.raises(AuthError):
        fixed_clock(NOW).verify(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({k: JSON for k in good_body()})))
def test_verify_of_any_signed_json_returns_typed_claims_or_raises_auth_error(body: Any):
    try:
        claims = fixed_clock(NOW).verify(signed(body))
    except AuthError:
        return
    assert isinstance(claims.subject, str) and isinstance(claims.role, Role)
    assert type(claims.issued_at) is float and type(claims.expires_at) is float


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("c", Role.CLIENT, 0), {}, "ttl_seconds"),
        (("c", Role.CLIENT, -5), {}, "ttl_seconds"),
        (("c", Role.CLIENT, float("nan")), {}, "ttl_seconds"),
        (("c", Role.CLIENT, 1e12), {}, "1970 to 5000"),
        (("", Role.CLIENT, 60), {}, "subject"),
        (("a\tb", Role.CLIENT, 60), {}, "subject"),
        (("c", "root", 60), {}, "role 'root'"),
        (("c", Role.CLIENT, 60), {"max_examples": 0}, "max_examples"),
        (("c", Role.CLIENT, 60), {"max_examples": True}, "max_examples"),
    ],
)
def test_issue_refuses_bad_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], match: str):
    with pytest.raises(ConfigError, match=match):
        SIGNER.issue(*args, **kwargs)


@pytest.mark.parametrize("umask", [0o000, 0o277])  # the mode must not depend on the umask
def test_the_signing_key_is_created_private_and_reloaded(tmp_path: Path, umask: int):
    path = tmp_path / "secrets" / "token.key"
    path.parent.mkdir()
    old_umask = os.umask(umask)
    try:
        signer = TokenSigner.load_or_create(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["token.key"]  # no temporary left
    token, claims = signer.issue("c", Role.CLIENT, 60)
    again = TokenSigner.load_or_create(path)
    assert again.public_key_pem == signer.public_key_pem
    assert again.verifier().verify(token) == claims
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_foreign_signing_key_file_is_an_error_not_replaced(tmp_path: Path):
    path = tmp_path / "token.key"
    path.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        TokenSigner.load_or_create(path)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    with pytest.raises(ConfigError, match="not Ed25519"):
        TokenSigner.load_or_create(path)
    assert path.read_bytes() == pem


def test_a_verifier_needs_an_ed25519_public_key():
    with pytest.raises(ConfigError, match="not a PEM public key"):
        TokenVerifier(b"garbage")
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = ec_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigError, match="not Ed25519"):
        TokenVerifier(pem)
    with pytest.raises(ConfigError, match="leeway_seconds"):
        TokenVerifier(SIGNER.public_key_pem, leeway_seconds=-1)
