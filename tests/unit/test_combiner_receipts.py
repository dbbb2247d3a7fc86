"""The combiner's receipt check: the spec's public keys bound, a receipt verified over the
statement the combiner itself would report (its own id, the client's numbers)."""

from __future__ import annotations

import pytest

from stratafl.combiner.receipts import check_receipt_keys, receipt_verifies
from stratafl.errors import ConfigError
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security.receipts import ReceiptKeys, Statement, make_receipt

KEYS = ReceiptKeys(b"\x05" * 32)
METRICS = {"train_loss": 0.5}


def _spec(**keys: bytes) -> pb.RoundSpec:
    return pb.RoundSpec(kind=pb.TRAIN, round_id="r-1", client_ids=["c0", "c1"], receipt_keys=keys)


def _signed(client_id: str, combiner_id: str = "k", num_examples: int = 10) -> bytes:
    said = Statement("r-1", "train", client_id, combiner_id, num_examples, METRICS)
    return make_receipt(KEYS.key_for(client_id), said)


def test_a_spec_with_keys_of_its_clients_passes() -> None:
    check_receipt_keys(pb.RoundSpec(client_ids=["c0", "c1"]))
    check_receipt_keys(_spec(**KEYS.public_keys(["c0", "c1"])))


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({"c0": b"\x01" * 31}, "31 bytes"),
        ({"c0": b"\x01" * 33}, "33 bytes"),
        ({"stranger": b"\x01" * 32}, "does not select"),
    ],
)
def test_a_spec_with_bad_keys_is_refused(keys: dict[str, bytes], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_receipt_keys(_spec(**keys))


def test_a_receipt_verifies_for_its_client_at_its_combiner_only() -> None:
    spec = _spec(**KEYS.public_keys(["c0", "c1"]))
    receipt = _signed("c0")
    assert receipt_verifies(spec, "k", "c0", 10, METRICS, receipt)
    assert not receipt_verifies(spec, "other", "c0", 10, METRICS, receipt)  # another combiner
    assert not receipt_verifies(spec, "k", "c0", 11, METRICS, receipt)  # another count
    assert not receipt_verifies(spec, "k", "c0", 10, {"train_loss": 0.4}, receipt)
    assert not receipt_verifies(spec, "k", "c1", 10, METRICS, receipt)  # c1's key
    assert not receipt_verifies(spec, "k", "c0", 10, METRICS, _signed("c1"))
    assert not receipt_verifies(spec, "k", "c0", 10, METRICS, b"")
    only_c1 = _spec(c1=KEYS.public_key_for("c1"))
    assert not receipt_verifies(only_c1, "k", "c0", 10, METRICS, receipt)  # no key for c0


def test_a_spec_without_keys_leaves_the_check_to_the_controller() -> None:
    assert receipt_verifies(pb.RoundSpec(client_ids=["c0"]), "k", "c0", 10, METRICS, b"")
