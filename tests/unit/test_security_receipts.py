"""Receipts: a client's key signs exactly what it reported, and nothing else verifies;
its public key verifies without being able to sign."""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratafl.errors import ConfigError
from stratafl.security.receipts import (
    ReceiptKeys,
    Statement,
    decode_key,
    encode_key,
    make_receipt,
    public_key_of,
    verify_receipt,
)

KEYS = ReceiptKeys(b"\x07" * 32)
HONEST = Statement("r-1", "train", "client-1", "combiner-a", 120, {"loss": 0.5, "acc": 0.9})

texts = st.text(max_size=12)
numbers = st.floats(allow_nan=False)
statements = st.builds(
    Statement,
    round_id=texts,
    kind=st.sampled_from(["train", "validate"]),
    client_id=texts,
    combiner_id=texts,
    num_examples=st.integers(0, 2**63 - 1),
    metrics=st.dictionaries(texts, numbers, max_size=4),
)


def test_a_receipt_verifies_under_its_clients_key_only() -> None:
    receipt = make_receipt(KEYS.key_for("client-1"), HONEST)
    assert len(receipt) == 64
    assert KEYS.verify(HONEST, receipt)
    assert verify_receipt(KEYS.public_key_for("client-1"), HONEST, receipt)
    assert not verify_receipt(KEYS.public_key_for("client-2"), HONEST, receipt)
    assert not KEYS.verify(dataclasses.replace(HONEST, client_id="client-2"), receipt)
    assert not KEYS.verify(HONEST, b"")
    assert not KEYS.verify(HONEST, receipt[:-1])
    assert not KEYS.verify(HONEST, receipt[:-1] + bytes([receipt[-1] ^ 1]))


def test_the_public_key_is_the_seeds_and_is_not_the_seed() -> None:
    """What the controller sends a combiner verifies, but is not what signs."""
    seed = KEYS.key_for("client-1")
    public = KEYS.public_key_for("client-1")
    assert public == public_key_of(seed) and len(public) == 32 and public != seed
    assert KEYS.public_keys(["client-1", "client-2"]) == {
        "client-1": public,
        "client-2": KEYS.public_key_for("client-2"),
    }
    assert ReceiptKeys(b"\x07" * 32).public_key_for("client-1") == public  # derived, not stored


def test_a_malformed_public_key_verifies_nothing() -> None:
    receipt = make_receipt(KEYS.key_for("client-1"), HONEST)
    assert not verify_receipt(b"", HONEST, receipt)
    assert not verify_receipt(KEYS.public_key_for("client-1")[:31], HONEST, receipt)
    assert not verify_receipt(b"\xff" * 32, HONEST, receipt)


@given(statements, texts)
def test_another_clients_key_never_verifies(signed: Statement, other: str) -> None:
    """A signature made with another client's key fails, whatever the statement."""
    if other == signed.client_id:
        other += "x"
    forged = make_receipt(KEYS.key_for(other), signed)
    assert not KEYS.verify(signed, forged)


def test_keys_differ_per_client_and_per_secret() -> None:
    assert KEYS.key_for("a") != KEYS.key_for("b")
    assert KEYS.key_for("a") != ReceiptKeys(b"\x08" * 32).key_for("a")
    assert len(KEYS.key_for("a")) == 32


def test_metric_order_does_not_matter_but_names_do() -> None:
    receipt = make_receipt(KEYS.key_for("client-1"), HONEST)
    reordered = dataclasses.replace(HONEST, metrics={"acc": 0.9, "loss": 0.5})
    assert KEYS.verify(reordered, receipt)
    renamed = dataclasses.replace(HONEST, metrics={"acc": 0.9, "los": 0.5})
    assert not KEYS.verify(renamed, receipt)


def test_fields_do_not_run_into_each_other() -> None:
    """The encoding is length-prefixed: moving a character from one field to the next
    makes different bytes."""
    a = dataclasses.replace(HONEST, round_id="r-1x", client_id="client-1")
    b = dataclasses.replace(HONEST, round_id="r-1", client_id="xclient-1")
    assert a.encode() != b.encode()


def test_a_statement_out_of_range_verifies_nothing() -> None:
    bad = dataclasses.replace(HONEST, kind="aggregate")
    with pytest.raises(ValueError, match="kind"):
        bad.encode()
    assert not KEYS.verify(bad, b"\x00" * 64)
    assert not KEYS.verify(dataclasses.replace(HONEST, num_examples=-1), b"\x00" * 64)
    with pytest.raises(ValueError):
        make_receipt(KEYS.key_for("client-1"), bad)


@given(statements, statements)
def test_any_changed_field_fails_verification(signed: Statement, claimed: Statement) -> None:
    receipt = make_receipt(KEYS.key_for(signed.client_id), signed)
    same = signed.encode() == claimed.encode()
    assert KEYS.verify(claimed, receipt) == same


@given(statements, st.sampled_from([f.name for f in dataclasses.fields(Statement)]))
def test_changing_one_field_fails_verification(signed: Statement, field: str) -> None:
    receipt = make_receipt(KEYS.key_for(signed.client_id), signed)
    value = getattr(signed, field)
    if field == "kind":
        changed: object = "validate" if value == "train" else "train"
    elif field == "num_examples":
        changed = value + 1 if value < 2**63 - 1 else value - 1
    elif field == "metrics":
        changed = {**value, "extra": 1.0} if "extra" not in value else {}
    else:
        changed = value + "x"
    assert not KEYS.verify(dataclasses.replace(signed, **{field: changed}), receipt)


def test_keys_travel_as_base64url() -> None:
    key = KEYS.key_for("client-1")
    assert decode_key(encode_key(key)) == key
    assert decode_key("") is None
    assert decode_key(encode_key(key[:16])) is None
    assert decode_key("not base64!") is None


def test_the_secret_survives_a_restart_and_is_private(tmp_path) -> None:
    path = tmp_path / "trust" / "receipt.key"
    first = ReceiptKeys.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = ReceiptKeys.load_or_create(path)
    assert first.key_for("c") == again.key_for("c")
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="receipt secret"):
        ReceiptKeys.load_or_create(path)
