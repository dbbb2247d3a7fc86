"""Round grants: the controller's signature over one round for one combiner, checked by
clients; a signature of another kind (a token's) never passes as a grant's."""

from __future__ import annotations

import dataclasses

import pytest

from stratafl.errors import AuthError, ConfigError
from stratafl.security import Role, TokenSigner
from stratafl.security.claims import b64decode
from stratafl.security.grants import GRANT_DOMAIN, Grant, GrantVerifier, sign_grant
from stratafl.security.tokens import SIGNATURE_BYTES

NOW = 1_800_000_000.0
GRANT = Grant(
    session_id="s",
    round=3,
    round_id="r-1",
    kind=1,
    model_id="m",
    combiner_id="combiner-0",
    expires_at=NOW + 60,
)


def _verifier(signer: TokenSigner, now: float = NOW) -> GrantVerifier:
    return GrantVerifier(signer.public_key_pem, clock=lambda: now)


def test_a_grant_verifies_for_its_combiner_until_it_expires():
    signer = TokenSigner.generate()
    blob = sign_grant(signer, GRANT)
    assert _verifier(signer).verify(blob, "combiner-0") == GRANT
    with pytest.raises(AuthError, match="for combiner 'combiner-0', not 'combiner-1'"):
        _verifier(signer).verify(blob, "combiner-1")
    with pytest.raises(AuthError, match="expired"):
        _verifier(signer, now=NOW + 3600).verify(blob, "combiner-0")


def test_no_grant_an_altered_one_or_another_keys_is_refused():
    signer = TokenSigner.generate()
    blob = sign_grant(signer, GRANT)
    with pytest.raises(AuthError, match="no round grant"):
        _verifier(signer).verify(b"", "combiner-0")
    other_round = dataclasses.replace(GRANT, round=4).payload()
    with pytest.raises(AuthError, match="does not verify"):
        _verifier(signer).verify(blob[:SIGNATURE_BYTES] + other_round, "combiner-0")
    with pytest.raises(AuthError, match="does not verify"):
        _verifier(signer).verify(sign_grant(TokenSigner.generate(), GRANT), "combiner-0")
    with pytest.raises(AuthError, match="wrong size"):
        _verifier(signer).verify(b"x" * 10, "combiner-0")


def test_a_tokens_signature_never_passes_as_a_grants():
    signer = TokenSigner.generate()
    token, _ = signer.issue("combiner-0", Role.COMBINER, 60)
    _, payload, signature = token.split(".")
    forged = b64decode(signature) + (b64decode(payload) or b"")
    with pytest.raises(AuthError):
        _verifier(signer).verify(forged, "combiner-0")
    with pytest.raises(ConfigError, match="signing domain"):
        signer.sign_document(b"st1.", b"{}")
    assert GRANT_DOMAIN.endswith(b"\0")
